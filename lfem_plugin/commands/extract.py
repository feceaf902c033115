"""``lfem-reid extract``: features of images from a trained checkpoint, as a ``.npy`` with the paths beside it."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._model import add_model_args, load_model, cuda_available, positive, writable_file, parse_cameras

HELP = "extract features of images with a trained checkpoint"


def add_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--images", required=True, help="folder of images, or a text file with one path per line")
    parser.add_argument("--cameras", nargs="+", default=None,
                        help="camera id per image (ints), 'from-name' to parse NNNN_cC names, or 'mean' (the mean SIE "
                             "row: cameras the model never saw in training); default: no SIE")
    parser.add_argument("--out", type=Path, default=Path("features.npy"), help="features .npy (paths beside it)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if cuda_available() else "cpu")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images with a warning")


def run(args: argparse.Namespace) -> int:
    from ..data.io import list_images
    from ..utils.atomic import save_npy, write_text
    from ..tools.inference import extract_features
    positive(args.batch_size, "--batch-size")
    if args.out.suffix != ".npy":  # np.save would append .npy silently
        args.out = args.out.with_name(args.out.name + ".npy")
    writable_file(args.out, "--out")
    model, cfg = load_model(args, device=args.device)
    paths = list_images(args.images)
    cameras = parse_cameras(args.cameras, paths, "extract")
    feats, kept = extract_features(model, paths, cfg.data.height, cfg.data.width, cfg.data.norm_mean,
                                   cfg.data.norm_std, cameras, args.batch_size, args.device, args.skip_bad_images)
    paths_file = args.out.with_suffix(".paths.txt")
    save_npy(args.out, feats)
    write_text(paths_file, "\n".join(kept) + "\n", "feature paths")
    print(f"{feats.shape[0]} features of dimension {feats.shape[1]} -> {args.out} (paths: {paths_file})")
    return 0
