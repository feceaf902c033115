"""Camera Side Information Embedding (SIE) of TransReID.

Reference: TransReID (ICCV 2021), Sec. 3.3 "Side Information Embeddings".
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from timm.layers import trunc_normal_
from torch import nn

__all__ = ["CameraEmbedding", "UNKNOWN_CAMERA", "SIE_MODES", "camera_argument"]

UNKNOWN_CAMERA = -1  # camera id meaning "unknown": the mean of the table's rows (a test set with unrelated cameras)
SIE_MODES = ("cameras", "mean", "off")  # how a test set's camera ids reach SIE (config test.cross_domain_sie)


def camera_argument(cameras, mode: str):
    """The ``camera`` argument for SIE ``mode`` given a set's camera ids (a tensor or a list): the ids
    (``'cameras'``), :data:`UNKNOWN_CAMERA` for every image (``'mean'``) or None (``'off'``)."""
    if mode not in SIE_MODES:
        raise ValueError(f"SIE mode {mode!r} is not one of {SIE_MODES}")
    if mode == "off":
        return None
    if mode == "mean":
        return torch.full_like(cameras, UNKNOWN_CAMERA) if torch.is_tensor(cameras) else \
            [UNKNOWN_CAMERA] * len(cameras)
    return cameras


class CameraEmbedding(nn.Module):
    """A learnable ``(num_cameras, 1, D)`` table; returns ``coef * table[row(camera)]`` to add to every token.

    Rows belong to the cameras seen in training, in sorted order of their ids (``camera_ids``; default
    ``0..num_cameras-1``), the way torchreid relabels person ids: a training set whose cameras are ``c1`` and
    ``c6`` gets a two-row table. A camera id without a row (never seen in training) is an error naming the known
    ids; :mod:`lfem_plugin.tools.preflight` checks the test cameras before training starts. :data:`UNKNOWN_CAMERA`
    (``-1``) selects the mean of all rows: the expected embedding over the training cameras, used for a test set whose
    cameras have nothing to do with them (``test.cross_domain_sie mean``).

    ``camera=None`` means "no side information" (torchreid's ``FeatureExtractor`` and stock engines call
    ``model(x)``) and returns ``None``. With fewer than 2 cameras SIE is disabled and cameras are ignored.

    Reference: TransReID (ICCV 2021), Sec. 3.3, camera-only SIE with coefficient lambda (3.0 in the paper's recipe).

    Args:
        num_cameras: number of training cameras (``datamanager.num_train_cams``); ignored with ``camera_ids``.
        embed_dim: token width.
        coef: the SIE coefficient ``lambda``.
        camera_ids: the raw camera ids of the training set (one table row each).
    """

    def __init__(self, num_cameras: int, embed_dim: int, coef: float = 3.0,
                 camera_ids: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        ids = sorted({int(c) for c in camera_ids}) if camera_ids is not None else list(range(num_cameras))
        if UNKNOWN_CAMERA in ids:
            raise ValueError(f"camera id {UNKNOWN_CAMERA} is reserved for 'unknown camera' (the mean SIE row); "
                             f"relabel the training cameras to 0..N-1")
        self.num_cameras = len(ids) if len(ids) > 1 else 0
        self.coef = coef
        if self.num_cameras:
            self.table = nn.Parameter(torch.zeros(self.num_cameras, 1, embed_dim))
            trunc_normal_(self.table, std=0.02)
            self.register_buffer("camera_ids", torch.tensor(ids, dtype=torch.long))
        else:
            self.register_parameter("table", None)
            self.register_buffer("camera_ids", None)

    @property
    def enabled(self) -> bool:
        return self.table is not None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints written before camera ids were stored: their rows are cameras 0..N-1.
        if self.enabled and prefix + "table" in state_dict and prefix + "camera_ids" not in state_dict:
            state_dict[prefix + "camera_ids"] = torch.arange(state_dict[prefix + "table"].shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, camera: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if camera is None or self.table is None:
            return None
        camera = torch.as_tensor(camera, device=self.table.device).long().reshape(-1)
        # One-hot row selection (exactly table[row]; exports to ONNX without a gather on a searched index); an
        # unknown camera weighs every row 1/N.
        match = (camera.unsqueeze(1) == self.camera_ids.unsqueeze(0)).to(self.table.dtype)
        unknown = (camera == UNKNOWN_CAMERA).unsqueeze(1).to(self.table.dtype)
        known = match.sum(1) + unknown[:, 0]
        # The check reads a value to the host (a device sync): evaluation only. Training cameras are the table's
        # rows by construction (lfem_plugin.train.train_cameras) and preflight checks every test set's cameras.
        if not (self.training or torch.jit.is_tracing() or torch.compiler.is_compiling()) and not bool(known.all()):
            bad = int(camera[known == 0][0])
            raise ValueError(f"camera id {bad} is outside the SIE table of {self.num_cameras} training cameras "
                             f"(ids {self.camera_ids.tolist()}); evaluate without cameras (camera=None; config "
                             f"test.use_cameras False: SIE off), with camera {UNKNOWN_CAMERA} (the mean row; "
                             f"test.cross_domain_sie mean) or train with all cameras")
        rows = (match + unknown / self.num_cameras) @ self.table.flatten(1)
        return self.coef * rows.unsqueeze(1)

    def extra_repr(self) -> str:
        return f"num_cameras={self.num_cameras}, coef={self.coef}"
