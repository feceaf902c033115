"""Choose the training budget on a validation split: the validation curves of runs trained with evaluations every few
epochs (each checkpoint stores the evaluation of its epoch), and the budget criterion applied to them.

Criterion (stated before the runs): a budget of E epochs is converged when a run of E epochs ends within ``--tol``
validation mAP (clean queries, percentage points) of a run of the longest budget measured, on the slowest row; the
smallest such E is chosen. Beside it, the issue's reading is reported for every run: the gain of its validation mAP
over its own last ``--window`` epochs (converged when below ``--gain``). Never run on test queries.

Usage: python benchmarks/convergence_budget.py RUN_DIR [RUN_DIR ...] [--tol 1.0] [--window 10] [--gain 0.5]
       [--out benchmarks/results/cuhk03_pair1_convergence/budget.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any, Dict, List


def curve(run: Path) -> Dict[str, Any]:
    """``{'epochs': E, 'points': [{'epoch', target: {'mAP', 'R1'}}...]}`` of one run folder, from its checkpoints."""
    from lfem_plugin.utils.checkpoint import list_checkpoints, load_checkpoint
    points, max_epoch, schedule = [], None, {}
    for epoch, path in list_checkpoints(run / "model"):
        state = load_checkpoint(path)
        if max_epoch is None and state.get("config"):
            from lfem_plugin.config import load_config
            cfg = load_config(None, text=state["config"])
            max_epoch = int(cfg.train.max_epoch)
            schedule = {"optim": cfg.train.optim, "lr": float(cfg.train.lr), "batch_size": int(cfg.train.batch_size),
                        "warmup_epochs": int(cfg.lfem.warmup_epochs), "stride": int(cfg.lfem.stride)}
        results = state.get("results") or {}
        if results:
            points.append({"epoch": int(epoch), **{name: {"mAP": round(100 * r["mAP"], 2),
                                                         "R1": round(100 * r["cmc"][0], 2)}
                                                  for name, r in results.items()}})
    return {"run": run.name, "max_epoch": max_epoch, "schedule": schedule, "points": points}


def gain_over_window(points: List[Dict[str, Any]], window: int, target: str) -> Any:
    """Validation mAP at the last point minus at the point ``window`` epochs before it (None if absent)."""
    if not points:
        return None
    last = points[-1]
    before = [p for p in points if p["epoch"] == last["epoch"] - window]
    return round(last[target]["mAP"] - before[0][target]["mAP"], 2) if before else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (data.save_dir of lfem-reid train)")
    parser.add_argument("--target", default="market_layout", help="the validation query set read")
    parser.add_argument("--tol", type=float, default=1.0)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--gain", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cuhk03_pair1_convergence/budget.json"))
    args = parser.parse_args()
    curves = [curve(run) for run in args.runs]
    finished = [c for c in curves if c["points"] and c["points"][-1]["epoch"] == c["max_epoch"]]
    for c in curves:
        c["finished"] = c in finished
        c["gain_last_window"] = gain_over_window(c["points"], args.window, args.target)
        c["final_mAP"] = c["points"][-1][args.target]["mAP"] if c["points"] else None
    chosen = None
    if finished:
        longest = max(finished, key=lambda c: c["max_epoch"])
        within = sorted((c for c in finished if c["final_mAP"] >= longest["final_mAP"] - args.tol),
                        key=lambda c: c["max_epoch"])
        chosen = {"epochs": within[0]["max_epoch"], "run": within[0]["run"], "longest": longest["run"],
                  "longest_final_mAP": longest["final_mAP"]}
    record = {"about": __doc__.split("\n\n")[0], "criterion": __doc__.split("\n\n")[1].replace("\n", " "),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.machine()} CPU, shared with other jobs", "target": args.target, "tol": args.tol,
              "window": args.window, "gain": args.gain, "runs": curves, "chosen": chosen}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    for c in curves:
        print(f"{c['run']}: {c['max_epoch']} epochs ({c['schedule']}), "
              f"{'finished' if c['finished'] else 'not finished'}; final "
              f"{args.target} mAP {c['final_mAP']}; gain over its last {args.window} epochs {c['gain_last_window']}")
    print(f"chosen budget: {chosen}")


if __name__ == "__main__":
    main()
