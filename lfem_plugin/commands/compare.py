"""``lfem-reid compare``: train and compare models under one protocol (any profile, several seeds, resumable)."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train and compare models under one protocol (resumable; --report to aggregate)"


def add_args(parser: argparse.ArgumentParser) -> None:
    from ..tools.protocols import PROFILES
    parser.add_argument("--profile", choices=list(PROFILES), default="quick",
                        help="quick: CPU, offline ORL faces with occluders; paper: GPU, the paper's recipe; "
                             "pedestrians: CPU, CUHK03 camera pair 1 (--root holding cuhk03_pair1_128x64/), clean "
                             "and occluded queries in one run; a research project adds its own (projects/visibility: "
                             "visibility, visibility_pedestrians)")
    parser.add_argument("--benchmark", default=None,
                        help="paper profile: occluded_duke (default), market1501 (with occluded_reid, partial_reid, "
                             "partial_ilids as targets), p_dukemtmc_reid, dukemtmcreid or msmt17: the configs in "
                             "configs/<benchmark>/")
    parser.add_argument("--models", nargs="+", default=None, help="subset of the profile's models")
    parser.add_argument("--seeds", nargs="+", default=[0], help="seeds; mean ± std over them")
    parser.add_argument("--out", type=Path, default=Path("compare_out"), help="results folder (resumable)")
    parser.add_argument("--root", default="reid-data", help="data root")
    parser.add_argument("--vit-weights", default=None, help="jx_vit_base_p16_224-80ecf9dd.pth (paper profile)")
    parser.add_argument("--force", action="store_true", help="re-run models that already have a result")
    parser.add_argument("--report", action="store_true", help="only aggregate existing results")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides applied to every model")


def run(args: argparse.Namespace) -> int:
    from ..tools.compare import report, run_compare, summary_text
    from .train import split_list_overrides
    split_list_overrides(args, ("models", "seeds"))  # `--seeds 0 1 train.max_epoch 3`: the overrides stay theirs
    args.seeds = _seeds(args.seeds or [0])
    if not args.report:
        results = run_compare(args.profile, args.models, args.seeds, args.out, args.root, args.opts,
                              args.vit_weights, args.force, args.benchmark)
        print(summary_text(results))
    path = report(args.out)
    print(f"\ntable: {path}\ncsv:   {args.out / 'results.csv'}\nplots: {args.out / 'cmc.png'}, "
          f"{args.out / 'bars.png'}")
    return 0


def _seeds(items) -> list:
    try:
        return [int(item) for item in items]
    except ValueError:
        raise ValueError(f"--seeds {' '.join(map(str, items))}: seeds are integers (e.g. --seeds 0 1 2)") from None
