"""A trained model for multi-object trackers: graphs that take exactly what a tracker feeds, and the check that
they give the model's own features on that tracker's preprocessing of real crops.

What each tracker feeds a ReID model (their released code, ../shared/notes/trackers.md): BoxMOT RGB / 255 then
ImageNet mean / std, Ultralytics RGB in [0, 1], neither settable; this plugin's checkpoints expect their own
normalisation (mean = std = 0.5 for TransReID's ViTs). A tracker graph does the rest inside, as one fused
per-channel affine before the model: ``x_model = x_fed * s + b`` with ``s = std_fed / std_model`` and
``b = (mean_fed - mean_model) / std_model``.

Readings chosen (docs/TRACKERS.md, measured): the feature is ``f_final`` *after* the BNNeck - before it, every pair
of people sits within a cosine distance of 0.001 of each other (below every tracker threshold), after it same and
different people separate at the trackers' thresholds, with equal or better rank-1 / mAP; and SIE reads the mean
camera row (a tracker's cameras are ones the model never saw; ``test.cross_domain_sie``'s default).
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..models.pretrained import IMAGENET_MEAN, IMAGENET_STD
from ..models.sie import UNKNOWN_CAMERA
from ..utils.atomic import atomic_path, write_text

__all__ = ["TARGETS", "TrackerGraph", "tracker_model", "tracker_crops", "export_for_tracker", "FED_STATS"]

TARGETS = ("generic", "boxmot", "ultralytics")
# what each tracker's input is after its own preprocessing (RGB / 255, then (x - mean) / std)
FED_STATS = {"boxmot": (IMAGENET_MEAN, IMAGENET_STD), "ultralytics": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))}


def tracker_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` giving the tracker feature: ``f_final`` after the BNNeck (plugin models; torchreid's own
    models give their evaluation feature), in eval mode."""
    out = copy.deepcopy(model).eval()
    if hasattr(out, "neck_feat"):
        out.neck_feat, out.eval_feature = "after", "final"  # the constructor's documented switches
    return out


class TrackerGraph(nn.Module):
    """``images`` as a tracker feeds them ``(N, 3, H, W)`` -> ``(N, D)`` features: the fused affine to the model's
    normalisation, the mean camera row for SIE models, the model.

    Args:
        model: a plugin or torchreid model (already :func:`tracker_model`).
        fed_mean, fed_std: the tracker's normalisation of RGB in [0, 1] (``(0, 0, 0), (1, 1, 1)``: none).
        mean, std: the checkpoint's normalisation.
    """

    def __init__(self, model: nn.Module, fed_mean: Sequence[float], fed_std: Sequence[float],
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        fed_mean, fed_std, mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1)
                                        for v in (fed_mean, fed_std, mean, std))
        self.register_buffer("scale", fed_std / std)
        self.register_buffer("bias", (fed_mean - mean) / std)
        self.plugin = hasattr(model, "uses_sie")
        self.mean_camera = self.plugin and bool(model.uses_sie)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images * self.scale + self.bias
        if not self.plugin:
            return self.model(x)
        camera = torch.full_like(x[:, 0, 0, 0], UNKNOWN_CAMERA, dtype=torch.long) if self.mean_camera else None
        return self.model(x, camera=camera)


def tracker_crops(frame_bgr: np.ndarray, boxes_xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crops as trackers cut them (BoxMOT 25.0.0): each box's corners rounded to integer pixels (``np.round``, half
    to even) and clipped to the frame, resized (stretch, bilinear, OpenCV) to ``height x width``, BGR -> RGB, / 255:
    ``(N, 3, H, W)`` float32. A box that keeps less than one pixel after rounding and clipping (wholly outside,
    degenerate) becomes the one frame pixel nearest to it."""
    import cv2
    frame_h, frame_w = frame_bgr.shape[:2]
    out = np.empty((len(boxes_xyxy), 3, height, width), dtype=np.float32)
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)):
        left = int(np.clip(np.round(min(x0, x1)), 0, frame_w - 1))
        top = int(np.clip(np.round(min(y0, y1)), 0, frame_h - 1))
        right = int(np.clip(np.round(max(x0, x1)), left + 1, frame_w))
        bottom = int(np.clip(np.round(max(y0, y1)), top + 1, frame_h))
        crop = cv2.resize(frame_bgr[top:bottom, left:right], (width, height), interpolation=cv2.INTER_LINEAR)
        out[i] = crop[:, :, ::-1].transpose(2, 0, 1) / 255.0
    return out


def _frame_and_boxes(height: int, width: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """A generated BGR frame (blocks of colour + noise) and 8 person-like boxes, two partly outside it."""
    rng = np.random.default_rng(seed)
    frame = np.kron(rng.integers(0, 255, (9, 16, 3)), np.ones((40, 40, 1))).astype(np.float64)
    frame = np.clip(frame + rng.normal(0, 12, frame.shape), 0, 255).astype(np.uint8)
    tops, lefts = rng.integers(0, 200, 8), rng.integers(0, 560, 8)
    boxes = np.stack([lefts, tops, lefts + 2.0 * width / 2, tops + 2.0 * height / 2], 1).astype(np.float32)
    boxes[0] -= (40, 30, 0, 0)  # partly outside at the top left
    boxes[1, 2:] = (frame.shape[1] + 25, frame.shape[0] + 10)  # partly outside at the bottom right
    return frame, boxes


def _run_export(graph: nn.Module, out: Path, fmt: str, height: int, width: int) -> None:
    if fmt == "onnx":
        from .export import _export, require_onnx_extra
        require_onnx_extra(True)
        with atomic_path(out, what="tracker export", keep_suffix=True) as tmp:
            _export(graph, (torch.rand(2, 3, height, width),), ["images"], str(tmp))
    else:  # BoxMOT's TorchScript backend loads it with torch.jit.load: torch's deprecation notice is not the user's.
        # The tracer's warnings name the model's input checks (shape, camera), constant for a fixed H x W and camera
        # reading; the traced graph is checked at other batch sizes than the trace's (tests/tools/test_trackers.py).
        with warnings.catch_warnings(), atomic_path(out, what="tracker export", keep_suffix=True) as tmp:
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.jit.save(torch.jit.trace(graph, torch.rand(2, 3, height, width), check_trace=False), str(tmp))


def _run_exported(out: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    if fmt == "onnx":
        import onnxruntime as ort
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*")
        return torch.jit.load(str(out), map_location="cpu")(torch.from_numpy(x)).numpy()


def export_for_tracker(model: nn.Module, out: str | Path, height: int, width: int, mean: Sequence[float],
                       std: Sequence[float], target: str, fmt: str = "onnx", model_name: str = "") -> Dict:
    """Export ``model`` for ``target`` (``boxmot`` or ``ultralytics``) as ``fmt`` (``onnx``; ``torchscript`` for
    BoxMOT) with one input ``images`` (dynamic batch ``batch``, static H x W) and one ``(N, D)`` output; BoxMOT also
    gets ``<file>.metadata.json`` (model name, input size, preprocessing, feature). Checked on crops of a generated
    BGR frame cut and normalised as the tracker does: the file against the PyTorch model fed the same crops in its
    own normalisation (``max_abs_diff``). Raises ValueError for a target/format pair no tracker reads and
    RuntimeError for a non-finite or out-of-tolerance check (the file is removed)."""
    if target not in FED_STATS or (fmt == "torchscript" and target != "boxmot"):
        raise ValueError(f"--for {target} with {fmt}: tracker exports are onnx for boxmot or ultralytics and "
                         f"torchscript for boxmot (generic: the plain export)")
    out = Path(out)
    reading = tracker_model(model)
    fed_mean, fed_std = FED_STATS[target]
    graph = TrackerGraph(reading, fed_mean, fed_std, mean, std).eval()
    _run_export(graph, out, fmt, height, width)
    frame, boxes = _frame_and_boxes(height, width)
    crops = tracker_crops(frame, boxes, height, width)
    fed = ((crops - np.array(fed_mean).reshape(1, 3, 1, 1)) / np.array(fed_std).reshape(1, 3, 1, 1)).astype(np.float32)
    got = _run_exported(out, fmt, fed)
    with torch.no_grad():
        own = torch.from_numpy((crops - np.array(mean).reshape(1, 3, 1, 1)) / np.array(std).reshape(1, 3, 1, 1))
        cams = torch.full((len(crops),), UNKNOWN_CAMERA) if graph.mean_camera else None
        ref = (reading(own.float(), camera=cams) if graph.plugin else reading(own.float())).numpy()
    diff = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max())
    if not np.isfinite(got).all() or not np.isfinite(diff) or diff > 1e-3 * max(1.0, scale):
        out.unlink(missing_ok=True)
        raise RuntimeError(f"the {target} export does not reproduce the model (max abs diff {diff}, feature scale "
                           f"{scale}); nothing was written")
    report = {"target": target, "format": fmt, "file": str(out), "input": [None, 3, height, width],
              "feature": "f_final after the BNNeck" if graph.plugin else "the model's evaluation feature",
              "sie": "mean camera row" if graph.mean_camera else "none", "max_abs_diff": diff, "crops": int(len(crops))}
    if target == "boxmot":
        report["metadata"] = str(_write_metadata(out, model_name, height, width, fed_mean, fed_std, report))
    return report


def _write_metadata(out: Path, model_name: str, height: int, width: int, fed_mean, fed_std,
                    report: Dict) -> Path:
    """BoxMOT's sidecar ``<file>.metadata.json``: the model name and input size (``img_size`` and
    ``model_kwargs.img_size``, which its TorchScript backend reads), and what the graph expects."""
    path = out.with_suffix(out.suffix + ".metadata.json")
    meta = {"model_name": model_name or "lfem_plugin", "img_size": [height, width],
            "model_kwargs": {"img_size": [height, width]},
            "preprocess": {"input": "RGB", "scale": 1 / 255, "mean": list(fed_mean), "std": list(fed_std)},
            "feature": report["feature"], "sie": report["sie"], "exported_by": "lfem_plugin"}
    return write_text(path, json.dumps(meta, indent=2) + "\n", "tracker metadata")

