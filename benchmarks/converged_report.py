"""Aggregate the converged CUHK03 ablation (benchmarks/cuhk03_converged.sh) over seeds: the ablation table (clean and
occluded queries), the occlusion-robustness curves per row (by occluder kind, mean and spread over seeds, with the
area under each curve relative to the clean score) and the gate analysis of the rows with an LFEM gate.

Reads RESULTS/rows/<row>_seed<N>.json (``lfem-reid compare``), RESULTS/robustness/<row>_seed<N>/robustness.json
(``lfem-reid robustness``) and RESULTS/gates/<row>_seed<N>/gates.json (``lfem-reid analyze-gates``); writes
RESULTS/report.json, RESULTS/report.md and RESULTS/robustness_rows.png. Values are mean ± std (sample, ddof 1, as
``lfem-reid compare --report``; 0 for one seed) over the seeds present; each table names how many. Only rows whose
compare status is ok are read.

Usage: python benchmarks/converged_report.py [RESULTS] (default benchmarks/results/cuhk03_pair1_converged)
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

ROWS = ("baseline_vit", "lfem_only", "rerc_only", "full", "plus_stripes")  # display order; others follow
BASELINE = "baseline_vit"  # the row the robustness differences are paired against
TARGETS = {"market_layout": "clean", "market_layout_occluded": "occluded"}


def _by_row(paths: List[Path]) -> Dict[str, Dict[int, Path]]:
    out: Dict[str, Dict[int, Path]] = defaultdict(dict)
    for path in paths:
        name = path.parent.name if path.name in ("robustness.json", "gates.json") else path.stem
        match = re.fullmatch(r"(.+)_seed(\d+)", name)
        if match:
            out[match.group(1)][int(match.group(2))] = path
    order = {key: i for i, key in enumerate(ROWS)}
    return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def _std(values, axis=None):
    values = np.asarray(values, float)
    return np.std(values, axis=axis, ddof=1) if values.shape[0 if axis is None else axis] > 1 else \
        np.zeros_like(np.mean(values, axis=axis))


def _ms(values, digits: int = 2) -> Dict[str, float]:
    values = np.asarray(values, float)
    return {"mean": round(float(values.mean()), digits), "std": round(float(_std(values.ravel())), digits),
            "n": int(values.size)}


def ablation(results: Path) -> Dict[str, Any]:
    table = {}
    for row, seeds in _by_row(sorted((results / "rows").glob("*.json"))).items():
        runs = [json.loads(seeds[s].read_text()) for s in sorted(seeds)]
        runs = [r for r in runs if r.get("status") == "ok"]
        if not runs:
            continue
        table[row] = {"label": runs[0]["label"], "seeds": [r["seed"] for r in runs],
                      "epochs": sorted({r["epochs"] for r in runs}),
                      "wall_min": _ms([r["wall_s"] / 60 for r in runs]),
                      **{f"{name}_{metric}": _ms([r["targets"][target][metric] for r in runs])
                         for target, name in TARGETS.items() for metric in ("R1", "mAP")}}
    return table


def robustness(results: Path) -> Dict[str, Any]:
    """Per row and occluder kind: the mAP curve over areas (each seed's mean over positions), mean and spread over
    seeds, and the relative area under it (mean over positions, then over seeds)."""
    out = {}
    for row, seeds in _by_row(sorted((results / "robustness").glob("*/robustness.json"))).items():
        curves: Dict[str, List[List[float]]] = defaultdict(list)
        aucs: Dict[str, Dict[int, float]] = defaultdict(dict)
        positions: Dict[str, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
        areas = None
        for seed in sorted(seeds):
            record = json.loads(seeds[seed].read_text())
            per_kind: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
            for curve in record["curves"]:
                if curve["mAP_auc_rel"] is None:  # a clean mAP of 0: no relative area
                    continue
                per_kind[curve["kind"]].append(curve)
                positions[curve["kind"]][curve["position"]].append(curve["mAP_auc_rel"])
            for kind, kind_curves in per_kind.items():
                areas = kind_curves[0]["areas"]
                curves[kind].append(np.mean([c["mAP"] for c in kind_curves], axis=0).tolist())
                aucs[kind][seed] = round(float(np.mean([c["mAP_auc_rel"] for c in kind_curves])), 4)
        out[row] = {"seeds": sorted(seeds), "areas": areas,
                    "kinds": {kind: {"mAP_mean": np.round(np.mean(curves[kind], axis=0), 2).tolist(),
                                     "mAP_std": np.round(_std(curves[kind], axis=0), 2).tolist(),
                                     "auc_rel": _ms(list(aucs[kind].values()), 3),
                                     "auc_rel_by_seed": aucs[kind],
                                     "auc_rel_by_position": {p: round(float(np.mean(v)), 3)
                                                             for p, v in positions[kind].items()}}
                              for kind in curves}}
    return out


def _spearman(x, y) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(x, y).statistic) if np.std(x) > 0 and np.std(y) > 0 else float("nan")


def gates(results: Path) -> Dict[str, Any]:
    """Per row: Spearman(occluded fraction, gate) over all (query, group) pairs and inside each group (mean of the
    four), the occluded queries' and the clean gallery's mean gate, over seeds."""
    out = {}
    for row, seeds in _by_row(sorted((results / "gates").glob("*/gates.json"))).items():
        overall, in_group, query, gallery = [], [], [], []
        for seed in sorted(seeds):
            record = json.loads(seeds[seed].read_text())
            fractions, values = np.asarray(record["fractions"]), np.asarray(record["query_gates"])
            overall.append(_spearman(fractions.ravel(), values.ravel()))
            in_group.append(float(np.nanmean([_spearman(fractions[:, k], values[:, k])
                                              for k in range(values.shape[1])])))
            query.append(record["query_gate_mean"])
            gallery.append(record["gallery_gate_mean"])
        out[row] = {"seeds": sorted(seeds), "spearman": _ms(overall, 3), "spearman_in_group": _ms(in_group, 3),
                    "query_gate_mean": np.round(np.mean(query, axis=0), 3).tolist(),
                    "gallery_gate_mean": np.round(np.mean(gallery, axis=0), 3).tolist(),
                    "query_minus_gallery": _ms(np.mean(np.asarray(query) - np.asarray(gallery), axis=1), 3)}
    return out


def _pm(v: Dict[str, float], digits: int = 1, sign: str = "") -> str:
    """``mean ± std`` (``sign="+"``: the mean always signed); one seed has no spread, so it shows the value alone (the
    table's seeds column says 1)."""
    mean = f"{v['mean']:{sign}.{digits}f}"
    return f"{mean} ± {v['std']:.{digits}f}" if v["n"] > 1 else mean


def markdown(report: Dict[str, Any]) -> str:
    lines = ["| row | seeds | epochs | clean R1 | clean mAP | occluded R1 | occluded mAP | wall (min) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["ablation"].values():
        lines.append(f"| {row['label']} | {len(row['seeds'])} | {'/'.join(map(str, row['epochs']))} | "
                     f"{_pm(row['clean_R1'])} | {_pm(row['clean_mAP'])} | {_pm(row['occluded_R1'])} | "
                     f"{_pm(row['occluded_mAP'])} | {row['wall_min']['mean']:.0f} |")
    kinds = sorted({k for r in report["robustness"].values() for k in r["kinds"]})
    lines += ["", "Occlusion robustness: mAP area under the curve relative to the clean score (0-60% of the query, "
              "mean over bottom/side/top), mean ± std over seeds (one seed: its value):", "",
              "| row | seeds | " + " | ".join(kinds) + " |", "| --- | --- | " + " | ".join("---" for _ in kinds) + " |"]
    for key, row in report["robustness"].items():
        cells = [_pm(row["kinds"][k]["auc_rel"], 3) if k in row["kinds"] else "-" for k in kinds]
        lines.append(f"| {key} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    base = report["robustness"].get(BASELINE)
    if base:
        lines += ["", f"Relative area minus the {BASELINE} row's, paired by seed (positive: flatter than it):",
                  "", "| row | seeds | " + " | ".join(kinds) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in kinds) + " |"]
        for key, row in report["robustness"].items():
            if key == BASELINE:
                continue
            cells, paired = [], set()
            for kind in kinds:
                ours, theirs = row["kinds"].get(kind, {}).get("auc_rel_by_seed", {}), \
                    base["kinds"].get(kind, {}).get("auc_rel_by_seed", {})
                shared = sorted(set(ours) & set(theirs))
                paired |= set(shared)
                cells.append(_pm(_ms([ours[s] - theirs[s] for s in shared], 3), 3, "+") if shared else "-")
            lines.append(f"| {key} | {len(paired)} | " + " | ".join(cells) + " |")
    if report["gates"]:
        lines += ["", "| row | seeds | Spearman(occluded, gate) | in-group Spearman | occluded queries - gallery gate "
                  "| gallery gate per group |", "| --- | --- | --- | --- | --- | --- |"]
        for key, row in report["gates"].items():
            lines.append(f"| {key} | {len(row['seeds'])} | {_pm(row['spearman'], 2)}"
                         f" | {_pm(row['spearman_in_group'], 2)} | "
                         f"{row['query_minus_gallery']['mean']:+.3f} | {row['gallery_gate_mean']} |")
    return "\n".join(lines) + "\n"


def plot(report: Dict[str, Any], out: Path) -> None:
    from lfem_plugin.tools.visualize import pyplot
    plt = pyplot()
    kinds = sorted({k for r in report["robustness"].values() for k in r["kinds"]})
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(4 * max(len(kinds), 1), 3.4), sharey=True)
    for ax, kind in zip(np.atleast_1d(axes), kinds):
        for key, row in report["robustness"].items():
            if kind in row["kinds"]:
                x, m, s = (100 * np.asarray(row["areas"]), np.asarray(row["kinds"][kind]["mAP_mean"]),
                           np.asarray(row["kinds"][kind]["mAP_std"]))
                ax.plot(x, m, marker="o", ms=3, label=report["ablation"].get(key, {}).get("label", key))
                ax.fill_between(x, m - s, m + s, alpha=0.15)
        ax.set_title(f"{kind} occluders")
        ax.set_xlabel("occluded area of the query (%)")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("mAP (%), mean of bottom/side/top")
    np.atleast_1d(axes)[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", type=Path, default=Path("benchmarks/results/cuhk03_pair1_converged"))
    args = parser.parse_args()
    report = {"about": __doc__.split("\n\n")[0], "ablation": ablation(args.results),
              "robustness": robustness(args.results), "gates": gates(args.results)}
    (args.results / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (args.results / "report.md").write_text(text)
    if report["robustness"]:
        plot(report, args.results / "robustness_rows.png")
    print(text)


if __name__ == "__main__":
    main()
