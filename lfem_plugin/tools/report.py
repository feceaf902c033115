"""The comparison report: one JSON per (model, seed) in, ``results.md``, ``results.csv``, ``cmc.png`` and
``bars.png`` out (mean and standard deviation over seeds). Runs evaluated on several targets (e.g. Market-1501
with Occluded-REID, Partial-REID and Partial-iLIDS) get one table per target, and plots per target: ``cmc.png`` /
``bars.png`` for the first, ``cmc_<target>.png`` / ``bars_<target>.png`` for the others."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from .visualize import pyplot, plot_cmc

__all__ = ["write_report"]


def _load(out_dir: Path) -> List[Dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out_dir.glob("*_seed*.json"))]


def _mean_std(values: List[float]) -> Tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def write_report(out_dir: str | Path, order: Sequence[str] = ()) -> Path:
    """Aggregate the JSONs in ``out_dir`` (models listed in ``order`` first) into the tables, CSV and plots."""
    out_dir = Path(out_dir)
    results = _load(out_dir)
    if not results:
        raise FileNotFoundError(f"no result JSON in {out_dir}; run the comparison first")
    order = list(order)
    results.sort(key=lambda r: (order.index(r["model"]) if r["model"] in order else 99, r["seed"]))
    targets = _targets(results)
    tables: List[Tuple[str, List[Dict[str, Any]]]] = []
    for target in targets:
        groups: Dict[str, List[Dict[str, Any]]] = {}
        for r in results:
            groups.setdefault(r["model"], []).append(_on_target(r, target))
        tables.append((target, [_row(key, runs) for key, runs in groups.items()]))
        _plots(out_dir, groups, "" if target == targets[0] else f"_{target}")
    _write_tables(out_dir, tables, results[0])
    return out_dir / "results.md"


def _targets(results: List[Dict[str, Any]]) -> List[str]:
    """The evaluation targets in order of first appearance (``['']`` for results that do not name them)."""
    names: List[str] = []
    for r in results:
        names += [t for t in r.get("targets", {}) if t not in names]
    return names or [""]


def _on_target(result: Dict[str, Any], target: str) -> Dict[str, Any]:
    """``result`` with its metrics on ``target`` at the top level (a finished run without that target: missing)."""
    if not target or result["status"] != "ok":
        return result
    if target not in result.get("targets", {}):
        return dict(result, status="missing", reason=f"not evaluated on {target}")
    return dict(result, **result["targets"][target])


def _row(key: str, runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    ok = [r for r in runs if r["status"] == "ok"]
    row = {"model": key, "label": runs[0]["label"], "runs": len(ok), "seeds": " ".join(str(r["seed"]) for r in ok)}
    if not ok:
        row["status"] = f"{runs[-1]['status']}: {runs[-1].get('reason', '')}"
        return row
    for metric in ("R1", "R5", "R10", "mAP", "train_images_per_s", "eval_s"):
        row[metric], row[metric + "_std"] = _mean_std([r[metric] for r in ok])
    row.update(params=ok[0]["params"], epochs=ok[0]["epochs"], status="ok", device=ok[0]["device"],
               sie=ok[0].get("sie", "cameras"))
    return row


def _table(rows: List[Dict[str, Any]]) -> List[str]:
    def cell(row, metric):
        if row["status"] != "ok":
            return "-"
        return f"{row[metric]:.1f} ± {row[metric + '_std']:.1f}" if row["runs"] > 1 else f"{row[metric]:.1f}"

    lines = ["| model | R1 | R5 | R10 | mAP | seeds | params (M) | train img/s | eval s | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        ok = row["status"] == "ok"
        lines.append(f"| {row['label']} | {cell(row, 'R1')} | {cell(row, 'R5')} | {cell(row, 'R10')} | "
                     f"{cell(row, 'mAP')} | {row['seeds'] or '-'} | {row['params'] / 1e6:.2f} | " if ok else
                     f"| {row['label']} | - | - | - | - | - | - | ")
        sie = f", SIE {row['sie']}" if ok and row["sie"] != "cameras" else ""  # test.cross_domain_sie
        lines[-1] += (f"{row['train_images_per_s']:.0f} | {row['eval_s']:.2f} | {row['epochs']} epochs{sie} |" if ok
                      else f"- | - | {row['status']} |")
    return lines


def _write_tables(out_dir: Path, tables: List[Tuple[str, List[Dict[str, Any]]]], first: Dict[str, Any]) -> None:
    lines = [f"Protocol: {first['protocol']}  ", f"Device: {first['device']}; measured {first['date']}; "
             f"versions: {first['versions']}"]
    for target, rows in tables:
        lines += ["", f"### {target}", ""] if len(tables) > 1 else [""]
        lines += _table(rows)
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    fields = ["model", "label", "target", "runs", "seeds", "R1", "R1_std", "R5", "R5_std", "R10", "R10_std", "mAP",
              "mAP_std", "params", "train_images_per_s", "eval_s", "epochs", "status"]
    with open(out_dir / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for target, rows in tables:
            writer.writerows(dict(row, target=target) for row in rows)


def _plots(out_dir: Path, groups: Dict[str, List[Dict[str, Any]]], suffix: str = "") -> None:
    """``cmc<suffix>.png`` and ``bars<suffix>.png`` of one target."""
    done = {k: [r for r in v if r["status"] == "ok"] for k, v in groups.items()}
    done = {k: v for k, v in done.items() if v}
    plot_cmc({runs[0]["label"]: np.mean([r["cmc"] for r in runs], axis=0) for runs in done.values()},
             out_dir / f"cmc{suffix}.png")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, len(done) * 0.9), 4))
    x = np.arange(len(done))
    for offset, metric in ((-0.2, "R1"), (0.2, "mAP")):
        stats = [_mean_std([r[metric] for r in runs]) for runs in done.values()]
        ax.bar(x + offset, [m for m, _ in stats], 0.4, yerr=[s for _, s in stats], capsize=3, label=metric)
    ax.set_xticks(x, [runs[0]["label"] for runs in done.values()], rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="%", title="Rank-1 and mAP (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / f"bars{suffix}.png", dpi=120)
    plt.close(fig)


