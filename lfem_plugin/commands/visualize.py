"""``lfem-reid visualize``: the LFEM gates drawn over the JPM patch groups of some images."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._model import add_model_args, load_model, positive, parse_cameras

HELP = "draw the LFEM gates over the JPM patch groups of some images"


def add_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--images", required=True, help="folder of images, or a text file with one path per line")
    parser.add_argument("--cameras", nargs="+", default=None, help="camera id per image, 'from-name' or 'mean'")
    parser.add_argument("--out", type=Path, default=Path("lfem_gates"), help="output folder of PNGs")
    parser.add_argument("--limit", type=int, default=16, help="at most this many images")


def run(args: argparse.Namespace) -> int:
    from ..data.io import list_images
    from ..data.transforms import build_test_transform
    from ..tools.visualize import draw_gate_pictures
    positive(args.limit, "--limit")
    model, cfg = load_model(args)
    paths = list_images(args.images)[:args.limit]
    cameras = (parse_cameras(args.cameras, paths, "visualize") or [None] * len(paths))[:len(paths)]
    transform = build_test_transform(cfg.data.height, cfg.data.width, cfg.data.norm_mean, cfg.data.norm_std)
    images = [(path, cam, Path(path).name) for path, cam in zip(paths, cameras)]
    for out, gates in draw_gate_pictures(model, images, transform, (cfg.data.height, cfg.data.width), args.out):
        print(f"{out}: gates {[round(float(g), 3) for g in gates]}")
    return 0
