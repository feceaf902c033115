"""``lfem-reid demo``: the offline CPU demo, the quick profile at one seed (LFEM variants vs torchreid's baselines on
occluded ORL faces)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "offline CPU demo: LFEM variants vs torchreid baselines on occluded ORL faces"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("lfem_demo"), help="results folder")
    parser.add_argument("--root", default="reid-data", help="data root (occluded queries are written here)")
    parser.add_argument("--models", nargs="+", default=None, help="subset of the quick profile's models")


def run(args: argparse.Namespace) -> int:
    from ..tools.compare import QUICK, report, run_compare, summary_text
    print("lfem-reid demo: LFEM variants vs torchreid baselines on ORL faces with occluded queries (CPU, offline).")
    print(f"protocol: {QUICK.description}\n")
    start = time.perf_counter()
    results = run_compare("quick", args.models, [0], args.out, args.root, force=True)
    print("\n" + summary_text(results))
    path = report(args.out)
    print(f"\nfinished in {time.perf_counter() - start:.0f} s. Table: {path}; plots: {args.out / 'cmc.png'}, "
          f"{args.out / 'bars.png'}")
    print("Note: a sanity check of the pipeline on a small, easy face set - not an Occluded-Duke result.")
    return 0
