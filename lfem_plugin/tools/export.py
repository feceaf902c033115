"""Export a trained model's evaluation graph to ONNX (dynamic batch, optional camera input), checked against
PyTorch with onnxruntime.

The exporter's progress lines and the model's "attribute assigned during export" warning (``last_gates``, kept for
the gate pictures) are silenced; the modules of the ``[onnx]`` extra are checked before anything is written.
"""
from __future__ import annotations

import importlib
import logging
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..utils.atomic import atomic_path

__all__ = ["export_onnx", "require_onnx_extra", "ONNX_EXTRA"]

_logger = logging.getLogger(__name__)
ONNX_EXTRA = ("onnx", "onnxscript", "onnxruntime")  # setup.py's [onnx] extra, by import name


def require_onnx_extra(check: bool = True) -> None:
    """Raise before any export when a module of the ``[onnx]`` extra is missing (``onnxruntime`` only with
    ``check``).

    Raises:
        ImportError: naming the missing modules and ``pip install 'lfem_plugin[onnx]'``.
    """
    missing: List[str] = []
    for name in ONNX_EXTRA if check else ONNX_EXTRA[:2]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(f"ONNX export needs {', '.join(missing)}, not installed (onnxruntime checks the exported "
                          f"graph against PyTorch); install the extra: pip install 'lfem_plugin[onnx]'",
                          name=missing[0])


class _OnnxGraph(nn.Module):
    """The evaluation graph with an optional camera input."""

    def __init__(self, model: nn.Module, with_camera: bool) -> None:
        super().__init__()
        self.model, self.with_camera = model, with_camera

    def forward(self, images: torch.Tensor, cameras: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.model(images, camera=cameras if self.with_camera else None)


def export_onnx(model: nn.Module, out: str, height: int, width: int, with_camera: bool = False,
                check: bool = True) -> Dict[str, float]:
    """Export the evaluation graph (dynamic batch); with ``check`` compare onnxruntime with PyTorch.

    Returns:
        ``{"max_abs_diff", "batch"}`` of the check (``{}`` without it).

    Raises:
        ImportError: a module of the ``[onnx]`` extra is missing (checked first: nothing is written).
    """
    require_onnx_extra(check)
    model = model.eval()
    graph = _OnnxGraph(model, with_camera).eval()
    images = torch.randn(2, 3, height, width)
    inputs: Tuple[torch.Tensor, ...] = (images, torch.zeros(2, dtype=torch.long)) if with_camera else (images,)
    names = ["images", "cameras"][:len(inputs)]
    with warnings.catch_warnings():  # the model keeps last_gates for pictures; not part of the exported graph
        warnings.filterwarnings("ignore", message=".*was assigned during export.*")
        with atomic_path(out, what="ONNX export", keep_suffix=True) as tmp:
            _export(graph, inputs, names, str(tmp))
    model.eval()
    if not check:
        return {}
    import onnxruntime as ort
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    test = torch.randn(5, 3, height, width)
    feed = {"images": test.numpy()}
    cams = None
    if with_camera:
        ids = model.build_args().camera_ids or [0]  # the training cameras (SIE rows), else any id
        cams = torch.tensor(ids)[torch.arange(5) % len(ids)]
        feed["cameras"] = cams.numpy()
    with torch.no_grad():
        ref = model(test, camera=cams).numpy()
    got = session.run(None, feed)[0]
    diff = float(np.abs(got - ref).max())
    if not (np.isfinite(got).all() and np.isfinite(ref).all()):  # never pass (or print "nan") on broken weights
        Path(out).unlink(missing_ok=True)
        raise RuntimeError(f"{out}: the model gives non-finite features (max abs diff {diff}); is the checkpoint "
                           f"damaged? The export was removed")
    return {"max_abs_diff": diff, "batch": 5}


def _export(graph: nn.Module, inputs: Tuple[torch.Tensor, ...], names: List[str], out: str) -> None:
    """The torch.export-based exporter (the supported one); the TorchScript exporter as a fallback."""
    try:
        batch = torch.export.Dim("batch", min=1)
        with warnings.catch_warnings():  # one batch Dim shared by every input: torch says so, harmlessly, per axis
            warnings.filterwarnings("ignore", message=r".*axis name: .* will not be used")
            torch.onnx.export(graph, inputs, out, input_names=names, output_names=["features"], dynamo=True,
                              dynamic_shapes=tuple({0: batch} for _ in inputs), external_data=False, verbose=False)
    except Exception as err:  # noqa: BLE001 - logged, then the legacy exporter is tried
        _logger.warning("torch.export-based ONNX export failed (%s); using the TorchScript exporter", err)
        torch.onnx.export(graph, inputs, out, input_names=names, output_names=["features"], dynamo=False,
                          dynamic_axes={**{n: {0: "batch"} for n in names}, "features": {0: "batch"}},
                          opset_version=17)
