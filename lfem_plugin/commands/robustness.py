"""``lfem-reid robustness``: occlusion-robustness curves of a trained checkpoint on a Market-layout test folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._model import cuda_available, positive, writable_file

HELP = "occlusion-robustness curves: rank-1/mAP as synthetic occluders of known kind, area and position cover queries"


def add_args(parser: argparse.ArgumentParser) -> None:
    from ..data.synthetic_occluders import KINDS, POSITIONS
    from ..tools.robustness import DEFAULT_AREAS
    parser.add_argument("--weights", required=True, help="a trained checkpoint (plugin or torchreid model)")
    parser.add_argument("--model", default="", help="model name, for a checkpoint without a stored config")
    parser.add_argument("--folder", required=True, type=Path,
                        help="Market-layout test folder: query/ and bounding_box_test/ (a training split not needed)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), help=f"occluder kinds ({', '.join(KINDS)})")
    parser.add_argument("--positions", nargs="+", default=list(POSITIONS),
                        help=f"occluder positions ({', '.join(POSITIONS)})")
    parser.add_argument("--areas", nargs="+", type=float, default=list(DEFAULT_AREAS),
                        help="occluded fractions of each query, ascending from 0 (the clean point)")
    parser.add_argument("--seed", type=int, default=0, help="draws of the occluders (same seed: same pixels)")
    parser.add_argument("--donors", type=Path, default=None,
                        help="folder of images (NNNN_cC names) giving the scene and person pixels; default: the "
                             "queries of other identities")
    parser.add_argument("--sie", choices=["mean", "off", "cameras"], default="mean",
                        help="camera reading for SIE models: mean (cameras the model never saw; default), off, or "
                             "the folder's camera ids (data the model was trained on)")
    parser.add_argument("--save-queries", action="store_true",
                        help="also write each point's occluded queries as a Market-layout folder with occlusion.json "
                             "(lfem-reid analyze-gates --dataset market_layout_occluded reads it)")
    parser.add_argument("--out", type=Path, default=Path("robustness_out"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if cuda_available() else "cpu")


def run(args: argparse.Namespace) -> int:
    from ..data.market_layout import scan_market_split
    from ..tools.robustness import Sweep, format_table, load_any, read_test_folder, run_sweep, write_outputs
    positive(args.batch_size, "--batch-size")
    sweep = Sweep(tuple(args.kinds), tuple(args.positions), tuple(args.areas), args.seed)  # checked: ValueError
    read_test_folder(args.folder)  # the folder before the model: both fail fast
    donors = scan_market_split(args.donors) if args.donors else None
    writable_file(args.out / "robustness.json", "--out")
    model, cfg = load_any(str(args.weights), args.model, args.device)
    saver = _QuerySaver(args.out / "points", args.folder) if args.save_queries else None
    result = run_sweep(model, cfg, args.folder, sweep, donors, args.sie, args.batch_size, args.device,
                       on_point=saver)
    result.update(weights=str(args.weights), model=cfg.model.name)
    paths = write_outputs(result, args.out)
    print(format_table(result))
    print(f"written {paths['json']}, {paths['table']}, {paths['plot']}" +
          (f"; occluded queries under {args.out / 'points'}/" if saver else ""))
    return 0


class _QuerySaver:
    """Each point's occluded queries as ``points/<kind>_<position>_<area>/``: ``query_occluded/`` (the images, same
    names), ``occlusion.json`` (the boxes) and links to the folder's ``query/`` and ``bounding_box_test/``."""

    def __init__(self, root: Path, folder: Path) -> None:
        self.root, self.folder = root, folder.resolve()

    def __call__(self, kind, position, area, query, images, boxes) -> None:
        from PIL import Image

        from ..data.occlusion import write_occlusion_file
        point = self.root / f"{kind}_{position}_{round(100 * area)}"
        (point / "query_occluded").mkdir(parents=True, exist_ok=True)
        for name in ("query", "bounding_box_test"):
            if not (point / name).exists():
                (point / name).symlink_to(self.folder / name)
        entries = {}
        for (path, _, _), image, box in zip(query, images, boxes):
            name = Path(path).name
            Image.fromarray(image).save(point / "query_occluded" / name, quality=95)
            entries[name] = {"box_xyxy": list(box), "image_size_wh": [image.shape[1], image.shape[0]], "kind": kind,
                             "occluded_fraction": (box[2] - box[0]) * (box[3] - box[1]) /
                             float(image.shape[0] * image.shape[1])}
        write_occlusion_file(point / "occlusion.json", entries, about=f"lfem-reid robustness: {kind} at the "
                             f"{position}, {area:.0%} of each query")
