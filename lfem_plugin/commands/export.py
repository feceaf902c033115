"""``lfem-reid export onnx``: a trained checkpoint as an ONNX graph, checked against PyTorch with onnxruntime."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._model import add_model_args, load_model, writable_file

HELP = "export a trained checkpoint (onnx), checked against PyTorch"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=["onnx"], help="export format")
    add_model_args(parser)
    parser.add_argument("--out", type=Path, default=Path("model.onnx"))
    parser.add_argument("--with-camera", action="store_true", help="add a 'cameras' input (SIE)")


def run(args: argparse.Namespace) -> int:
    from ..tools.export import export_onnx
    writable_file(args.out, "--out")
    model, cfg = load_model(args)
    report = export_onnx(model, str(args.out), cfg.data.height, cfg.data.width, args.with_camera)
    print(f"exported {args.out} (dynamic batch{', cameras input' if args.with_camera else ''}); onnxruntime vs "
          f"PyTorch max abs diff: {report['max_abs_diff']:.2e}")
    print(json.dumps(report))
    return 0
