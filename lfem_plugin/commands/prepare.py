"""``lfem-reid prepare occluded-duke``: build Occluded-DukeMTMC from the original zip."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=["occluded-duke"], help="dataset to build")
    parser.add_argument("--duke-zip", type=Path, required=True, help="the original DukeMTMC-reID.zip")
    parser.add_argument("--root", type=Path, required=True, help="data root; creates ROOT/Occluded_Duke")
    parser.add_argument("--lists", type=Path, default=None,
                        help="folder with train.list, query.list, gallery.list (default: download them)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing ROOT/Occluded_Duke")


def run(args: argparse.Namespace) -> int:
    from ..data.prepare_occluded_duke import prepare_occluded_duke
    target = prepare_occluded_duke(args.duke_zip, args.root, args.lists, args.overwrite)
    print(f"Occluded-DukeMTMC written to {target}")
    return 0
