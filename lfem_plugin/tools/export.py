"""Export a trained model's evaluation graph to ONNX (dynamic batch, optional camera input), checked against
PyTorch with onnxruntime."""
from __future__ import annotations

import logging
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ["export_onnx"]

_logger = logging.getLogger(__name__)


class _OnnxGraph(nn.Module):
    """The evaluation graph with an optional camera input."""

    def __init__(self, model: nn.Module, with_camera: bool) -> None:
        super().__init__()
        self.model, self.with_camera = model, with_camera

    def forward(self, images: torch.Tensor, cameras: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.model(images, camera=cameras if self.with_camera else None)


def export_onnx(model: nn.Module, out: str, height: int, width: int, with_camera: bool = False,
                check: bool = True) -> Dict[str, float]:
    """Export the evaluation graph (dynamic batch); with ``check`` compare onnxruntime with PyTorch."""
    model = model.eval()
    graph = _OnnxGraph(model, with_camera).eval()
    images = torch.randn(2, 3, height, width)
    inputs: Tuple[torch.Tensor, ...] = (images, torch.zeros(2, dtype=torch.long)) if with_camera else (images,)
    names = ["images", "cameras"][:len(inputs)]
    try:  # the torch.export-based exporter (the supported one); the TorchScript exporter as a fallback
        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(graph, inputs, out, input_names=names, output_names=["features"], dynamo=True,
                          dynamic_shapes=tuple({0: batch} for _ in inputs), external_data=False)
    except Exception as err:  # noqa: BLE001 - logged, then the legacy exporter is tried
        _logger.warning("torch.export-based ONNX export failed (%s); using the TorchScript exporter", err)
        torch.onnx.export(graph, inputs, out, input_names=names, output_names=["features"], dynamo=False,
                          dynamic_axes={**{n: {0: "batch"} for n in names}, "features": {0: "batch"}},
                          opset_version=17)
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
    return {"max_abs_diff": float(np.abs(got - ref).max()), "batch": 5}
