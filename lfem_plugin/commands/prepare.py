"""``lfem-reid prepare occluded-duke`` (Occluded-DukeMTMC from the original zip) and ``lfem-reid prepare
val-split`` (a validation split of a Market-layout folder's training identities)."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "build a dataset folder from its original archive (occluded-duke) or a validation split (val-split)"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=["occluded-duke", "val-split"],
                        help="occluded-duke: build ROOT/Occluded_Duke from DukeMTMC-reID.zip; val-split: write --out, "
                             "a Market-layout folder holding --ids training identities of --source out as its "
                             "query/gallery")
    parser.add_argument("--duke-zip", type=Path, default=None, help="occluded-duke: the original DukeMTMC-reID.zip")
    parser.add_argument("--root", type=Path, default=None, help="occluded-duke: data root; creates ROOT/Occluded_Duke")
    parser.add_argument("--lists", type=Path, default=None,
                        help="occluded-duke: folder with train.list, query.list, gallery.list (default: download)")
    parser.add_argument("--source", type=Path, default=None, help="val-split: the Market-layout folder")
    parser.add_argument("--out", type=Path, default=None, help="val-split: the folder to write")
    parser.add_argument("--ids", type=int, default=100, help="val-split: training identities held out")
    parser.add_argument("--seed", type=int, default=0, help="val-split: which identities (seeded draw)")
    parser.add_argument("--occlude", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                        help="val-split: also write query_occluded/ and occlusion.json, one occluder over LO..HI of "
                             "each query's area (e.g. 0.2 0.5), for choosing occlusion settings on training ids")
    parser.add_argument("--occluder-kinds", nargs="+", default=["noise", "image"],
                        choices=["noise", "image", "piece"], metavar="KIND",
                        help="val-split --occlude: what each occluder is, drawn uniformly: noise, image (the same "
                             "rectangle of another identity's image) or piece (a rectangle of it cut elsewhere and "
                             "resized in, as real occluders are); default: noise image")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def _required(args: argparse.Namespace, *flags: str) -> None:
    missing = [f"--{flag.replace('_', '-')}" for flag in flags if getattr(args, flag) is None]
    if missing:
        raise ValueError(f"prepare {args.dataset} needs {' and '.join(missing)}")


def run(args: argparse.Namespace) -> int:
    if args.dataset == "val-split":
        from ..data.prepare_val_split import write_val_split
        _required(args, "source", "out")
        occlude = tuple(args.occlude) if args.occlude else None
        target = write_val_split(args.source, args.out, args.ids, args.seed, args.overwrite, occlude,
                                 tuple(args.occluder_kinds))
        print(f"validation split written to {target} (use it with data.market_layout.folder {target})")
        return 0
    from ..data.prepare_occluded_duke import prepare_occluded_duke
    _required(args, "duke_zip", "root")
    target = prepare_occluded_duke(args.duke_zip, args.root, args.lists, args.overwrite)
    print(f"Occluded-DukeMTMC written to {target}")
    return 0
