"""Summarise ``lfem-reid analyze-gates`` over trained runs of several readings and seeds.

Each run folder (``<reading>_seed<N>``: a ``lfem-reid compare`` out folder's ``runs/``, or runs of
``configs/orl/quick_vit_tiny_96x80.yaml`` plus the reading's keys) holds ``model/model.pth.tar-<epoch>`` (the last one
is read) and its TensorBoard events. For every reading: the mean and spread over seeds of Spearman(occluded fraction,
gate) on the occluded queries of ``--dataset`` (over all (query, group) pairs, and inside each group: per-group
constant gates can give the first without any response to the occluder), how far the occluded queries' mean gate falls
below the clean gallery's, the mean gate of >= 50% vs <= 10% occluded groups, the clean
gallery's mean gate, the gates logged during training (last step, TensorBoard ``Train/gate/k``) and the run's mAP /
R1 on that dataset (from ``<run>.log``, the last line `lfem-reid train` prints, or from compare's
``<run>.json`` beside ``runs/``).

Usage: python benchmarks/gate_readings.py RUNS_DIR [--dataset orl_faces_occluded|market_layout_occluded]
       [--root DATA_ROOT] [--folder MARKET_FOLDER] [--out benchmarks/results/gate_readings.json]
"""
from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List

import numpy as np


def _train_gates(run: Path) -> List[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    tags = sorted(t for t in events.Tags()["scalars"] if re.search(r"gate/\d+$", t))
    return [events.Scalars(t)[-1].value for t in tags]


def _final_metrics(run: Path, dataset: str) -> Dict[str, float]:
    log = run.parent / f"{run.name}.log"  # `lfem-reid train` ends with {"<target>": {"mAP": ..., "rank1": ...}}
    if log.is_file():
        return next(iter(json.loads(log.read_text().strip().splitlines()[-1]).values()))
    result = run.parent.parent / f"{run.name}.json"  # lfem-reid compare: targets -> {R1, mAP} in %
    if result.is_file():
        target = json.loads(result.read_text())["targets"].get(dataset, {})
        return {"mAP": target.get("mAP", float("nan")) / 100, "rank1": target.get("R1", float("nan")) / 100}
    return {}


def _within_group(fractions: np.ndarray, gates: np.ndarray) -> float:
    """Spearman(occluded fraction, gate) inside each group, averaged over the groups where it is defined."""
    from lfem_plugin.tools.gate_analysis import gate_statistics
    rhos = [gate_statistics(fractions[:, k], gates[:, k])["spearman"] for k in range(fractions.shape[1])]
    rhos = [r for r in rhos if r == r]
    return float(np.mean(rhos)) if rhos else float("nan")


def _one(run: Path, root: str, dataset: str, folder: str = "") -> Dict[str, Any]:
    from lfem_plugin.tools.gate_analysis import analyze_gates
    from lfem_plugin.tools.inference import load_trained
    from lfem_plugin.utils.checkpoint import latest_checkpoint
    model, cfg = load_trained(str(latest_checkpoint(run / "model")))
    if folder:  # another Market-layout folder than the run trained with: its mAP is not this folder's
        cfg.defrost()
        cfg.data.market_layout.folder = folder
    result = analyze_gates(model, cfg, root or cfg.data.root, dataset=dataset)
    final = {} if folder else _final_metrics(run, dataset)
    fractions, gates, kinds = np.array(result["fractions"]), np.array(result["query_gates"]), np.array(result["kinds"])
    for kind, stats in result["by_kind"].items():
        stats["within_group_spearman"] = _within_group(fractions[kinds == kind], gates[kinds == kind])
    within = [g["spearman"] for g in result["per_group"] if g["spearman"] == g["spearman"]]
    return {"run": run.name, **result["queries"], "by_kind": result["by_kind"],
            # a response to the occluder, not per-group constants: Spearman inside each group, and how far the
            # occluded queries' mean gate falls below the clean gallery's
            "within_group_spearman": float(np.mean(within)) if within else float("nan"),
            "gallery_minus_query_gate": float(np.mean(np.subtract(result["gallery_gate_mean"],
                                                                  result["query_gate_mean"]))),
            "gallery_gate_mean": result["gallery_gate_mean"],
            "query_gate_mean": result["query_gate_mean"], "train_gates_last": _train_gates(run),
            "mAP": 100 * final.get("mAP", float("nan")), "rank1": 100 * final.get("rank1", float("nan"))}


def _mean_std(values: List[float]) -> List[float]:
    values = [v for v in values if v == v]  # drop NaN
    return [float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0] if values else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", type=Path)
    parser.add_argument("--root", default="")
    parser.add_argument("--dataset", default="orl_faces_occluded", help="the occluded-query dataset to analyse")
    parser.add_argument("--folder", default="", help="market_layout datasets: read this Market-layout folder instead "
                        "of the one each run trained with (e.g. a validation split with other occluders); mAP is "
                        "then not reported")
    parser.add_argument("--readings", nargs="*", default=None, help="only these readings (run-name prefixes); "
                        "default: every run with a checkpoint (runs of models without LFEM have no gates: pass the "
                        "others)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gate_readings.json")
    args = parser.parse_args()
    from lfem_plugin.utils.checkpoint import latest_checkpoint
    by_reading: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for run in sorted(p for p in args.runs.iterdir() if latest_checkpoint(p / "model")):
        reading = run.name.rsplit("_seed", 1)[0]
        if args.readings is None or reading in args.readings:
            by_reading[reading].append(_one(run, args.root, args.dataset, args.folder))
    summary = {}
    cell = lambda v: f"{v[0]:.3f}±{v[1]:.3f}" if v else "-"  # noqa: E731 (mAP in %, the rest 0-1)
    print(f"{'reading':<16} {'seeds':>5} {'spearman':>14} {'in-group':>14} {'gate >=50%':>12} {'gate <=10%':>12} "
          f"{'gallery':>12} {'gal-query':>12} {'mAP':>12}")
    for reading, runs in by_reading.items():
        row = {key: _mean_std([r[key] for r in runs]) for key in
               ("spearman", "within_group_spearman", "gallery_minus_query_gate", "gate_mean_occluded_ge_50",
                "gate_mean_occluded_le_10", "mAP", "rank1")}
        row["gallery_gate_mean"] = _mean_std([float(np.mean(r["gallery_gate_mean"])) for r in runs])
        row["train_gate_last_mean"] = _mean_std([float(np.mean(r["train_gates_last"])) for r in runs])
        row["seeds"] = len(runs)
        row["by_kind"] = {kind: {key: _mean_std([r["by_kind"][kind][key] for r in runs if kind in r["by_kind"]])
                                 for key in ("spearman", "within_group_spearman", "gate_mean_occluded_ge_50",
                                             "gate_mean_occluded_le_10")}
                          for kind in sorted({k for r in runs for k in r["by_kind"]})}
        summary[reading] = row
        print(f"{reading:<16} {len(runs):>5} {cell(row['spearman']):>14} {cell(row['within_group_spearman']):>14} "
              f"{cell(row['gate_mean_occluded_ge_50']):>12} {cell(row['gate_mean_occluded_le_10']):>12} "
              f"{cell(row['gallery_gate_mean']):>12} {cell(row['gallery_minus_query_gate']):>12} "
              f"{cell(row['mAP']):>12}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "dataset": args.dataset, "summary": summary,
                                    "runs": {k: v for k, v in by_reading.items()}}, indent=1) + "\n")
    for reading, row in summary.items():
        for kind, stats in row["by_kind"].items():
            print(f"  {reading} {kind:<6} in-group {cell(stats['within_group_spearman'])} pooled "
                  f"{cell(stats['spearman'])} gate >=50% {cell(stats['gate_mean_occluded_ge_50'])} <=10% "
                  f"{cell(stats['gate_mean_occluded_le_10'])}")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
