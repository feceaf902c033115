"""Exact, vectorised CMC / mAP (Market-1501 / DukeMTMC protocol).

Same results as torchreid's ``evaluate_rank(..., use_cython=False)`` - CMC exactly, mAP to float rounding -
without its Python loop over queries and gallery items: a numba kernel (one parallel pass per query row) or, when
numba is missing, a chunked torch path. Ties in distance are broken by gallery index, as a stable sort does.

Reference: Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015 (CMC, mAP).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

__all__ = ["evaluate_rank"]

_MAX_KEY = torch.iinfo(torch.int64).max


def _ordered_keys(dist: torch.Tensor) -> torch.Tensor:
    """Unique int64 keys whose order is (distance, gallery index): float32 bits made order-preserving, index low."""
    bits = dist.contiguous().view(torch.int32)
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats sort in reverse bit order
    return bits.long().mul_(1 << 32).add_(torch.arange(dist.shape[1], dtype=torch.int64))


def _ranks_of_matches(keys: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each query row: the 0-based rank, among kept gallery items, of each match (sorted), padded with -1.

    Positives are few, so they are sorted (``O(P log P)``); every kept negative is located among them by
    ``searchsorted`` (``O(G log P)``) and counted, instead of sorting the whole row.
    """
    rows, cols = positive.nonzero(as_tuple=True)
    num_pos = positive.sum(1)
    width = max(int(num_pos.max()) if len(num_pos) else 0, 1)
    pos_keys = keys[rows, cols]
    order = torch.argsort(pos_keys, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]  # by row, then by key
    rows, pos_keys = rows[order], pos_keys[order]
    starts = torch.cumsum(num_pos, 0) - num_pos
    slot = torch.arange(len(rows)) - starts[rows]
    sorted_pos = torch.full((keys.shape[0], width), _MAX_KEY, dtype=torch.int64)
    sorted_pos[rows, slot] = pos_keys
    # Non-negatives (matches, junk) get the largest key: their bucket is the row's number of matches, which
    # only feeds ranks past the last match, so no masking pass is needed.
    bucket = torch.searchsorted(sorted_pos, torch.where(negative, keys, _MAX_KEY), out_int32=True)
    bucket += torch.arange(keys.shape[0], dtype=torch.int32)[:, None] * (width + 1)
    counts = torch.bincount(bucket.view(-1), minlength=keys.shape[0] * (width + 1)).view(keys.shape[0], width + 1)
    ranks = torch.arange(width) + torch.cumsum(counts, 1)[:, :width]
    return torch.where(torch.arange(width) < num_pos[:, None], ranks, -1), num_pos


def _numba_rank_rows():
    try:
        from ._rank_numba import rank_rows
    except ImportError:  # numba is optional: the torch path gives the same results, a few times slower
        return None
    return rank_rows


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                  chunk_elements: int = 1 << 21, backend: str = "auto") -> Tuple[np.ndarray, float]:
    """CMC and mAP under the Market/Duke protocol, identical to torchreid's ``evaluate_rank``.

    Per query, gallery items with the same pid *and* camera are dropped; queries without a remaining match are
    skipped. Where every query keeps fewer than ``max_rank`` gallery items, torchreid returns a shorter CMC; this
    one keeps ``max_rank`` entries (the tail repeats the last value). Distances are compared in float32 (what
    torchreid's ``compute_distance_matrix`` produces).

    Args:
        distmat: ``(Q, G)`` distances (numpy or torch).
        q_pids, g_pids, q_camids, g_camids: 1-D identity and camera labels.
        max_rank: CMC length (clipped to the gallery size, as torchreid does).
        chunk_elements: bound on ``rows x G`` processed at once by the torch backend.
        backend: ``'numba'`` (a parallel per-row kernel), ``'torch'`` (chunked, vectorised) or ``'auto'`` (numba
            when installed). Both give identical results.

    Returns:
        ``(cmc, mAP)``: float32 array of length ``max_rank`` and a float.
    """
    dist = torch.as_tensor(np.asarray(distmat), dtype=torch.float32)
    q_pids, g_pids, q_camids, g_camids = (torch.as_tensor(np.asarray(a)).long().reshape(-1)
                                          for a in (q_pids, g_pids, q_camids, g_camids))
    num_q, num_g = dist.shape
    if (len(q_pids), len(g_pids)) != (num_q, num_g) or len(q_camids) != num_q or len(g_camids) != num_g:
        raise ValueError(f"labels do not match the {num_q}x{num_g} distance matrix")
    kernel = _numba_rank_rows() if backend in ("auto", "numba") else None
    if backend == "numba" and kernel is None:
        raise ImportError("backend='numba' needs `pip install numba`")
    if kernel is not None:
        first_rank, ap = kernel(dist.numpy(), q_pids.numpy(), g_pids.numpy(), q_camids.numpy(), g_camids.numpy())
    else:
        first_rank, ap = _rank_rows_torch(dist, q_pids, g_pids, q_camids, g_camids, chunk_elements)
    valid = first_rank >= 0
    if not valid.any():
        raise ValueError("no query has a match in the gallery (after removing same-id same-camera images)")
    max_rank = min(max_rank, num_g)
    hits = np.bincount(np.minimum(first_rank[valid], max_rank), minlength=max_rank + 1)
    cmc = np.cumsum(hits[:max_rank]).astype(np.float32) / int(valid.sum())
    return cmc, float(ap[valid].sum() / valid.sum())


def _rank_rows_torch(dist: torch.Tensor, q_pids: torch.Tensor, g_pids: torch.Tensor, q_camids: torch.Tensor,
                     g_camids: torch.Tensor, chunk_elements: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per query: rank of the first match (-1 without a match) and AP, in chunks of query rows."""
    num_q, num_g = dist.shape
    # One int64 label per (pid, camera) pair, so "same pid and same camera" is a single comparison.
    cam_base = int(torch.cat([q_camids, g_camids]).max()) + 1 if num_q and num_g else 1
    q_pidcam, g_pidcam = q_pids * cam_base + q_camids, g_pids * cam_base + g_camids
    first_rank, ap = [], []
    step = max(1, chunk_elements // max(num_g, 1))
    for start in range(0, num_q, step):
        sl = slice(start, start + step)
        same_pid = g_pids[None, :] == q_pids[sl, None]
        junk = g_pidcam[None, :] == q_pidcam[sl, None]
        ranks, num_pos = _ranks_of_matches(_ordered_keys(dist[sl]), same_pid & ~junk, ~same_pid)
        precision = torch.arange(1, ranks.shape[1] + 1, dtype=torch.float64) / (ranks + 1).double()
        precision = torch.where(ranks >= 0, precision, 0.0)  # padding slots of queries with fewer matches
        first_rank.append(torch.where(num_pos > 0, ranks[:, 0], -1))
        ap.append(precision.sum(1) / num_pos.clamp(min=1).double())
    if not first_rank:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return torch.cat(first_rank).numpy(), torch.cat(ap).numpy()
