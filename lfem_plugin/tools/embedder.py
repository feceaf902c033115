"""An embedder for any tracker: detector boxes on a BGR frame in, one L2-normalised feature per box out.

``Embedder(weights).get_features(boxes_xyxy, bgr_frame)`` is the duck-typed interface BoxMOT takes as
``reid_model=``; deep-sort-realtime (``DeepSort(embedder=None)``, ``update_tracks(..., embeds=...)``) and
hand-written trackers call it the same way. It cuts, resizes and normalises each crop exactly as a tracker does
(:func:`~lfem_plugin.tools.tracker_export.tracker_crops`), in batches, on torch or ONNX Runtime, and returns the
tracker feature (``f_final`` after the BNNeck, mean SIE camera: docs/TRACKERS.md).

Defined results for what detectors give: ``N = 0`` boxes -> a ``(0, D)`` array; a box partly outside the frame ->
its part inside; a box wholly outside, degenerate (zero or negative size) or under one pixel -> the one frame pixel
nearest to it (a finite, non-zero feature, as for any crop). A row that is not finite or of zero norm is never
returned (RuntimeError: the model is broken).

Reference: BoxMOT's ``reid_model`` protocol and deep-sort-realtime's ``embeds`` (read from their released code,
../shared/notes/trackers.md; neither is imported).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .tracker_export import FED_STATS, TrackerGraph, tracker_crops, tracker_model

__all__ = ["Embedder", "as_bgr_frame"]


def as_bgr_frame(frame: Any, what: str = "frame") -> np.ndarray:
    """An ``(H, W, 3)`` uint8 BGR array from what detectors and readers give: BGR ``(H, W, 3)``, greyscale ``(H, W)``
    or ``(H, W, 1)``, BGRA ``(H, W, 4)`` (alpha dropped); float arrays in [0, 1] or [0, 255] are scaled. ValueError
    for anything else (an empty array, another shape) saying what is accepted."""
    array = np.asarray(frame)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{what} of shape {tuple(array.shape)}: give an (H, W, 3) BGR image (uint8, as OpenCV reads "
                         f"it), (H, W) / (H, W, 1) greyscale or (H, W, 4) BGRA, with H, W >= 1")
    if array.dtype != np.uint8:
        array = np.asarray(array, dtype=np.float64)
        if not np.isfinite(array).all():
            raise ValueError(f"{what} holds non-finite pixels")
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def _boxes(boxes_xyxy: Any) -> np.ndarray:
    """``(N, 4)`` float64 boxes from ``(N, K >= 4)`` rows, one ``(4,)`` box or nothing; ValueError otherwise."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4))
    if boxes.shape == (4,):
        return boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] < 4:
        raise ValueError(f"boxes of shape {boxes.shape}: give (N, 4) x1 y1 x2 y2 pixels, or detection rows (N, K >= 4) "
                         "whose first four columns are x1 y1 x2 y2")
    return boxes[:, :4]


class Embedder:
    """Features of detector boxes for a tracker.

    Args:
        weights: a trained checkpoint (plugin or torchreid model).
        device: ``'cpu'`` or ``'cuda'`` (torch backend).
        backend: ``'torch'`` or ``'onnx'`` (ONNX Runtime on the CPU; the graph is exported from the checkpoint in
            memory and checked against torch once).
        batch_size: crops per forward.
        model_name: the model of a checkpoint without a stored config (torchreid's own engines).

    Reference: BoxMOT ``reid_model.get_features(xyxys, img)``.
    """

    def __init__(self, weights: str, device: str = "cpu", backend: str = "torch", batch_size: int = 32,
                 model_name: str = "") -> None:
        from .robustness import load_any
        if backend not in ("torch", "onnx"):
            raise ValueError(f"backend {backend!r}: 'torch' or 'onnx'")
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: at least 1")
        model, cfg = load_any(weights, model_name, device if backend == "torch" else "cpu")
        self.height, self.width, self.batch_size, self.device = cfg.data.height, cfg.data.width, batch_size, device
        # the graph takes crops in [0, 1] (Ultralytics' input) and does the checkpoint's normalisation inside
        self.graph = TrackerGraph(tracker_model(model), *FED_STATS["ultralytics"], cfg.data.norm_mean,
                                  cfg.data.norm_std).eval()
        self.session: Optional[Any] = self._onnx_session() if backend == "onnx" else None
        self.dim = int(self._run(np.zeros((1, 3, self.height, self.width), np.float32)).shape[1])

    def _onnx_session(self):
        import onnxruntime as ort

        from .export import _export, require_onnx_extra
        require_onnx_extra(True)
        with tempfile.TemporaryDirectory(prefix="lfem-embedder-") as folder, torch.no_grad():
            path = str(Path(folder) / "tracker.onnx")
            _export(self.graph.cpu(), (torch.rand(2, 3, self.height, self.width),), ["images"], path)
            return ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def _run(self, crops: np.ndarray) -> np.ndarray:
        if self.session is not None:
            return self.session.run(None, {"images": crops})[0]
        with torch.no_grad():
            return self.graph(torch.from_numpy(crops).to(self.device)).float().cpu().numpy()

    def get_features(self, boxes_xyxy: Sequence[Sequence[float]], bgr_frame: Any) -> np.ndarray:
        """``(N, D)`` float32 L2-normalised features of ``boxes_xyxy`` on ``bgr_frame`` (see :func:`as_bgr_frame`):
        ``(N, 4)`` pixels x1 y1 x2 y2 (x2/y2 exclusive), or detection rows ``(N, K >= 4)`` whose first four columns
        are those (BoxMOT's ``x1 y1 x2 y2 conf cls``); one box may be given as ``(4,)``. ValueError for any other
        shape or a non-finite coordinate."""
        boxes = _boxes(boxes_xyxy)
        if not np.isfinite(boxes).all():
            raise ValueError("boxes hold non-finite coordinates")
        if len(boxes) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        crops = tracker_crops(as_bgr_frame(bgr_frame), boxes, self.height, self.width)
        return self._normalised(np.concatenate([self._run(crops[i:i + self.batch_size])
                                                for i in range(0, len(crops), self.batch_size)]))

    def embed_crops(self, crops: Sequence[Any]) -> np.ndarray:
        """``(N, D)`` features of crops already cut (arrays as :func:`as_bgr_frame` accepts, each its whole box);
        an empty crop is refused (ValueError naming its index), greyscale and BGRA are converted."""
        frames = [as_bgr_frame(crop, f"crop {i}") for i, crop in enumerate(crops)]
        if not frames:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([self.get_features([[0, 0, f.shape[1], f.shape[0]]], f) for f in frames])

    @staticmethod
    def _normalised(feats: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        if not np.isfinite(feats).all() or (norms == 0).any():
            raise RuntimeError("the model gave a non-finite or zero feature; the checkpoint is damaged or broken")
        return (feats / norms).astype(np.float32)
