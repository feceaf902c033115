"""``lfem-reid doctor``: measure a config's training before the long run (fit, speed, projected time, health)."""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from .train import add_args as add_train_args, config_from_args

HELP = "measure a config before a long run: memory, speed, projected hours, health"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--synthetic", action="store_true",
                        help="measure on a throwaway dataset shaped like the config's (no real data needed)")
    parser.add_argument("--iters", type=int, default=5, help="timed training iterations")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training iterations before them")
    parser.add_argument("--eval-images", type=int, default=256, help="test images in the timed evaluation")
    parser.add_argument("--amp-check", action="store_true",
                        help="also compare one bf16 step with fp32 (always done when AMP is on)")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    add_train_args(parser)


def run(args: argparse.Namespace) -> int:
    from ..tools.doctor import format_report, run_doctor
    from ..tools.synthetic import synthetic_config
    if args.iters < 1 or args.eval_images < 1 or args.warmup < 0:
        raise ValueError(f"--iters {args.iters}, --eval-images {args.eval_images}, --warmup {args.warmup}: iters and "
                         f"eval-images must be at least 1, warmup at least 0")
    cfg = config_from_args(args)
    with tempfile.TemporaryDirectory(prefix="lfem-doctor-data-") as root:
        if args.synthetic:
            cfg = synthetic_config(cfg, root)
        report = run_doctor(cfg, iters=args.iters, warmup=args.warmup, eval_images=args.eval_images,
                            amp_check=args.amp_check or None)
    print(format_report(report))
    if args.out:
        from ..utils.atomic import write_text
        write_text(args.out, json.dumps(report, indent=1) + "\n", "doctor report")
        print(f"report: {args.out}")
    return 0
