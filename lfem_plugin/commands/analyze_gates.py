"""``lfem-reid analyze-gates``: how the LFEM gates respond to known occluders."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._model import add_model_args, load_model, writable_file

HELP = "how the LFEM gates respond to known occluders (a dataset's occluder boxes file)"


def add_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--root", default=None, help="data root of the dataset (default: the checkpoint's)")
    parser.add_argument("--dataset", default="orl_faces_occluded",
                        help="registered dataset whose queries carry the occluders (e.g. market_layout_occluded, "
                             "with --set data.market_layout.folder DIR unless the checkpoint's config names it)")
    parser.add_argument("--boxes", type=Path, default=None,
                        help="occluder boxes file ({\"queries\": {name: {\"box_xyxy\": [x0, y0, x1, y1], "
                             "\"image_size_wh\": [w, h]}}}); default: occlusion.json beside the queries")
    parser.add_argument("--out", type=Path, default=Path("gate_analysis"),
                        help="folder for gates.json, gates_scatter.png and gates_bars.png")


def run(args: argparse.Namespace) -> int:
    from ..tools.gate_analysis import analyze_gates, plot_gates, write
    writable_file(args.out / "gates.json", "--out")
    model, cfg = load_model(args)
    result = analyze_gates(model, cfg, cfg.data.root if args.root is None else args.root, args.dataset, args.boxes)
    path = write(result, args.out)
    plot_gates(result, args.out)
    q = result["queries"]
    print(f"occluded queries: Spearman(occluded fraction, gate) = {q['spearman']:.3f} over {q['pairs']} "
          f"(query, group) pairs; mean gate {q['gate_mean_occluded_ge_50']:.3f} where >= 50% occluded "
          f"({q['pairs_occluded_ge_50']} pairs), {q['gate_mean_occluded_le_10']:.3f} where <= 10% "
          f"({q['pairs_occluded_le_10']} pairs)")
    print(f"mean gate per group: clean gallery {[round(v, 3) for v in result['gallery_gate_mean']]}, occluded "
          f"queries {[round(v, 3) for v in result['query_gate_mean']]}")
    print(f"written {path}, {args.out / 'gates_scatter.png'}, {args.out / 'gates_bars.png'}")
    return 0
