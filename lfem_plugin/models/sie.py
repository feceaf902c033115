"""Camera Side Information Embedding (SIE) of TransReID.

Reference: TransReID (ICCV 2021), Sec. 3.3 "Side Information Embeddings".
"""
from __future__ import annotations

from typing import Optional

import torch
from timm.layers import trunc_normal_
from torch import nn

__all__ = ["CameraEmbedding"]


class CameraEmbedding(nn.Module):
    """A learnable ``(num_cameras, 1, D)`` table; returns ``coef * table[camera]`` to add to every token.

    ``camera=None`` means "no side information" (torchreid's ``FeatureExtractor`` and stock engines call
    ``model(x)``) and returns ``None``. With ``num_cameras <= 1`` SIE is disabled and cameras are ignored.

    Reference: TransReID (ICCV 2021), Sec. 3.3, camera-only SIE with coefficient lambda (3.0 in the paper's recipe).

    Args:
        num_cameras: number of training cameras (``datamanager.num_train_cams``).
        embed_dim: token width.
        coef: the SIE coefficient ``lambda``.
    """

    def __init__(self, num_cameras: int, embed_dim: int, coef: float = 3.0) -> None:
        super().__init__()
        self.num_cameras = num_cameras if num_cameras > 1 else 0
        self.coef = coef
        if self.num_cameras:
            self.table = nn.Parameter(torch.zeros(self.num_cameras, 1, embed_dim))
            trunc_normal_(self.table, std=0.02)
        else:
            self.register_parameter("table", None)

    @property
    def enabled(self) -> bool:
        return self.table is not None

    def forward(self, camera: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if camera is None or self.table is None:
            return None
        camera = torch.as_tensor(camera, device=self.table.device).long().reshape(-1)
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            lo, hi = int(camera.min()), int(camera.max())
            if lo < 0 or hi >= self.num_cameras:
                raise ValueError(f"camera id {lo if lo < 0 else hi} is outside the SIE table of {self.num_cameras} "
                                 f"training cameras (valid ids 0..{self.num_cameras - 1}); evaluate without cameras "
                                 f"(camera=None; config test.use_cameras False: SIE off) or train with all cameras")
        return self.coef * self.table[camera]

    def extra_repr(self) -> str:
        return f"num_cameras={self.num_cameras}, coef={self.coef}"
