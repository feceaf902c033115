"""``lfem-reid export onnx|torchscript [--for generic|boxmot|ultralytics]``: a trained checkpoint as a graph, checked
against PyTorch; ``--for`` a tracker, the graph takes exactly what that tracker feeds (docs/TRACKERS.md)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._model import add_model_args, load_model, writable_file

HELP = "export a trained checkpoint (onnx; onnx/torchscript for a tracker), checked against PyTorch"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=["onnx", "torchscript"], help="export format (torchscript: --for boxmot)")
    add_model_args(parser)
    parser.add_argument("--out", type=Path, default=Path("model.onnx"))
    parser.add_argument("--with-camera", action="store_true", help="add a 'cameras' input (SIE; generic only)")
    parser.add_argument("--for", dest="target", choices=["generic", "boxmot", "ultralytics"], default="generic",
                        help="generic: the checkpoint's normalisation, the evaluation feature; boxmot: RGB/255 then "
                             "ImageNet mean/std in, + <file>.metadata.json; ultralytics: RGB in [0, 1]; tracker "
                             "graphs give f_final after the BNNeck with the mean SIE camera (docs/TRACKERS.md)")


def run(args: argparse.Namespace) -> int:
    from ..tools.export import export_onnx
    writable_file(args.out, "--out")
    if args.target != "generic" or args.format == "torchscript":
        return _run_for_tracker(args)
    model, cfg = load_model(args)
    report = export_onnx(model, str(args.out), cfg.data.height, cfg.data.width, args.with_camera)
    print(f"exported {args.out} (dynamic batch{', cameras input' if args.with_camera else ''}); onnxruntime vs "
          f"PyTorch max abs diff: {report['max_abs_diff']:.2e}")
    print(json.dumps(report))
    return 0


def _run_for_tracker(args: argparse.Namespace) -> int:
    from ..tools.tracker_export import export_for_tracker
    if args.with_camera:
        raise ValueError("--with-camera: trackers feed one input (images); a tracker graph bakes in the mean SIE "
                         "camera; drop --with-camera, or export --for generic")
    model, cfg = load_model(args)
    report = export_for_tracker(model, args.out, cfg.data.height, cfg.data.width, cfg.data.norm_mean,
                                cfg.data.norm_std, args.target, args.format, cfg.model.name)
    print(f"exported {args.out} for {args.target} ({args.format}; input images (batch, 3, {cfg.data.height}, "
          f"{cfg.data.width}) as {args.target} feeds them; {report['feature']}; SIE {report['sie']}); on "
          f"{report['crops']} crops of a generated frame in that input, max abs diff to PyTorch: "
          f"{report['max_abs_diff']:.2e}" + (f"; sidecar {report['metadata']}" if "metadata" in report else ""))
    print(json.dumps(report))
    return 0
