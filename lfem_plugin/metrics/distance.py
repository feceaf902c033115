"""Query-gallery distance matrix in chunks of query rows, filled in place (no second ``Q x G`` copy).

Reference: torchreid ``metrics.distance.compute_distance_matrix`` (same metrics, same values).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["compute_distance_matrix"]


def compute_distance_matrix(query: torch.Tensor, gallery: torch.Tensor,
                            metric: Literal["euclidean", "cosine"] = "euclidean",
                            chunk_size: int = 4096) -> torch.Tensor:
    """``(Q, G)`` distances in chunks of query rows: squared euclidean (torchreid's ``euclidean``) or ``1 - cos``."""
    if query.dim() != 2 or gallery.dim() != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"expected (Q, D) and (G, D) features, got {tuple(query.shape)} and {tuple(gallery.shape)}")
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"unknown distance metric {metric!r}; choices: 'euclidean', 'cosine'")
    query, gallery = query.float(), gallery.float()
    if metric == "cosine":
        query, gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)
    g_sq = gallery.pow(2).sum(1)
    out = query.new_empty((query.shape[0], gallery.shape[0]))  # filled in place: no second (Q, G) copy
    for start in range(0, query.shape[0], chunk_size):
        q, rows = query[start:start + chunk_size], out[start:start + chunk_size]
        if metric == "cosine":
            torch.mm(q, gallery.t(), out=rows).neg_().add_(1)
        else:
            torch.addmm(q.pow(2).sum(1, keepdim=True) + g_sq, q, gallery.t(), beta=1, alpha=-2, out=rows)
    return out
