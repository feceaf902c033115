"""Numba kernel for :func:`lfem_plugin.metrics.rank.evaluate_rank`: one pass per query row, queries in parallel.

Per query: collect the matches (same pid, other camera), sort them by (distance, gallery index), then place every
other-identity gallery item among them with a binary search (ties broken by gallery index, as a stable sort
does) and count. Same results as the torch path; no ``Q x G`` temporaries.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["rank_rows"]


@njit(cache=True, nogil=True)
def _before(dist: float, index: int, t: np.ndarray, t_index: np.ndarray, count: int) -> int:
    """Number of matches ordered before gallery item (dist, index)."""
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi) // 2
        if t[mid] < dist or (t[mid] == dist and t_index[mid] < index):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(parallel=True, cache=True)
def rank_rows(dist: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_cams: np.ndarray,
              g_cams: np.ndarray):
    """Returns ``(first_rank, ap)`` per query; ``first_rank`` is -1 for queries without a match."""
    num_q, num_g = dist.shape
    first_rank = np.full(num_q, -1, dtype=np.int64)
    ap = np.zeros(num_q, dtype=np.float64)
    for q in prange(num_q):
        pid, cam = q_pids[q], q_cams[q]
        count = 0
        for g in range(num_g):
            if g_pids[g] == pid and g_cams[g] != cam:
                count += 1
        if count == 0:
            continue
        t = np.empty(count, dtype=dist.dtype)
        t_index = np.empty(count, dtype=np.int64)
        k = 0
        for g in range(num_g):
            if g_pids[g] == pid and g_cams[g] != cam:
                t[k] = dist[q, g]
                t_index[k] = g
                k += 1
        order = np.argsort(t, kind="mergesort")  # stable: equal distances keep gallery order
        t, t_index = t[order], t_index[order]
        before = np.zeros(count + 1, dtype=np.int64)  # negatives counted per slot between matches
        for g in range(num_g):
            if g_pids[g] != pid:
                before[_before(dist[q, g], g, t, t_index, count)] += 1
        negatives, total = 0, 0.0
        for i in range(count):
            negatives += before[i]
            rank = i + negatives
            if i == 0:
                first_rank[q] = rank
            total += (i + 1) / (rank + 1)
        ap[q] = total / count
    return first_rank, ap
