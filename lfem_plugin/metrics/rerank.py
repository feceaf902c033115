"""k-reciprocal re-ranking with torch: torchreid's ``re_ranking`` without its N x N sorts and dense Jaccard loops.

The same computation as torchreid's numpy version (signature, defaults, float32 arithmetic), restructured:

* each row's neighbours come from ``topk`` on row blocks of the distance matrix (torchreid sorts all N x N);
* the k-reciprocal sets and their expansion are checked for all rows at once on ``(N, k+1)`` index arrays;
* the encoding ``V`` is sparse (CSR, about ``k1 + k1 * k1 / 2`` entries a row) and so is its query expansion;
* the Jaccard term sums ``min(V[i, k], V[j, k])`` over the columns both rows use, joined through the column lists
  of ``V`` (torchreid's inverted index), a block of queries at a time.

Memory stays at the input distance matrices plus O(N k^2); the N x N float copies torchreid builds (distances,
ranks, ``V``, ``V_qe``) never exist. Tensors on a GPU are re-ranked there.

Ties: torchreid ranks neighbours with numpy's default argsort, which is not stable (its order among equal distances
depends on the numpy build and CPU). Which of several tied items is a neighbour matters only where the tie straddles
a neighbourhood boundary (``k1 + 1``, ``k1 / 2 + 1``, ``k2``); such rows - duplicate images, quantised features -
are ranked with that same numpy call, so the result matches torchreid's on the same machine, ties included.

Reference: Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017; torchreid
``utils/rerank.py``.
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch

__all__ = ["re_ranking"]

Array = Union[np.ndarray, torch.Tensor]
_TIE_MARGIN = 8  # extra neighbours fetched so that ties at the k-th place are resolved by index


def re_ranking(q_g_dist: Array, q_q_dist: Array, g_g_dist: Array, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3, block: int = 2048) -> np.ndarray:
    """Re-ranked ``(Q, G)`` distances (numpy float32), as torchreid's ``re_ranking(q_g_dist, q_q_dist, g_g_dist,
    k1, k2, lambda_value)``; inputs are numpy arrays or torch tensors (computed on their device)."""
    qg, qq, gg = (torch.as_tensor(x) for x in (q_g_dist, q_q_dist, g_g_dist))
    num_q, num_g = qg.shape
    if qq.shape != (num_q, num_q) or gg.shape != (num_g, num_g):
        raise ValueError(f"re_ranking: q_g {tuple(qg.shape)}, q_q {tuple(qq.shape)} and g_g {tuple(gg.shape)} do "
                         f"not fit together; expected (Q, G), (Q, Q), (G, G)")
    if k1 < 1 or k2 < 1:
        raise ValueError(f"re_ranking: k1={k1}, k2={k2}; both must be at least 1")
    num = num_q + num_g
    k_plus = min(k1 + 1, num)
    half_plus = min(int(round(k1 / 2.0)) + 1, num)
    ranks, row_max = _nearest(qg, qq, gg, k_plus, block, (k_plus, half_plus, min(k2, num)))
    rows = _DistanceRows(qg, qq, gg, row_max)
    support = _expanded_support(ranks, half_plus)
    crow, col, val = _encode(rows, support)
    if k2 != 1:
        crow, col, val = _query_expansion(crow, col, val, ranks[:, :min(k2, num)])
    out = torch.empty(num_q, num_g, dtype=torch.float32, device=qg.device)
    by_column = _columns_of_rows(crow, col, val, first_row=num_q, num_cols=num)
    for start in range(0, num_q, max(1, block // 8)):
        stop = min(num_q, start + max(1, block // 8))
        overlap = _min_overlap(crow, col, val, by_column, start, stop, num)[:, num_q:]
        jaccard = 1 - overlap / (2.0 - overlap)
        out[start:stop] = jaccard * (1 - lambda_value) + rows.query_gallery(start, stop) * lambda_value
    return out.cpu().numpy()


def _squared_rows(qg: torch.Tensor, qq: torch.Tensor, gg: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of ``[[qq, qg], [qg^T, gg]]`` squared (in the input precision, then float32, as
    torchreid)."""
    q = qg.shape[0]
    parts = []
    if start < q:
        parts.append(torch.cat([qq[start:min(stop, q)], qg[start:min(stop, q)]], 1))
    if stop > q:
        lo, hi = max(start, q) - q, stop - q
        parts.append(torch.cat([qg[:, lo:hi].t(), gg[lo:hi]], 1))
    return torch.cat(parts).pow(2).float()


def _nearest(qg: torch.Tensor, qq: torch.Tensor, gg: torch.Tensor, k: int, block: int,
             boundaries: Tuple[int, ...]) -> Tuple[torch.Tensor, torch.Tensor]:
    """One pass over the rows of torchreid's ``original_dist``: each row's ``k`` nearest indices (ascending) and
    each row's maximum. A row whose distances tie across one of the ``boundaries`` (the neighbourhood sizes used
    later) is ranked by numpy's argsort, as torchreid does, since which tied item falls inside then depends on that
    sort's (unstable) order; other ties go by index."""
    num = sum(qg.shape)
    ranks, row_max = [], []
    fetch = min(k + _TIE_MARGIN, num)
    cuts = torch.tensor([b for b in boundaries if 0 < b < fetch], dtype=torch.int64, device=qg.device)
    for start in range(0, num, block):
        squared = _squared_rows(qg, qq, gg, start, min(num, start + block))
        top = squared.amax(1)
        # dividing a row by its maximum keeps its order: select on the squared values, compare normalised ones
        values, index = torch.topk(squared, fetch, dim=1, largest=False, sorted=False)
        values = values / top[:, None]
        index, order = index.sort(dim=1)  # index order first, then a stable sort by value
        values, order = values.gather(1, order).sort(dim=1, stable=True)
        found = index.gather(1, order)[:, :k]
        tied = (values[:, cuts - 1] == values[:, cuts]).any(1).nonzero().flatten().tolist() if len(cuts) else []
        for row in tied:
            full = (squared[row] / top[row]).cpu().numpy()
            found[row] = torch.as_tensor(np.argsort(full)[:k], device=found.device)
        ranks.append(found)
        row_max.append(top)
    return torch.cat(ranks), torch.cat(row_max)


class _DistanceRows:
    """torchreid's ``original_dist``, ``[[qq, qg], [qg^T, gg]]`` squared with each row divided by its maximum
    (``row_max``, from :func:`_nearest`; torchreid divides columns by their maxima and transposes, the matrix is
    symmetric), read by row block or by entry from the three input matrices, never built whole."""

    def __init__(self, qg: torch.Tensor, qq: torch.Tensor, gg: torch.Tensor, row_max: torch.Tensor) -> None:
        self.qg, self.qq, self.gg, self.row_max = qg, qq, gg, row_max
        self.num_q = qg.shape[0]
        self.num = qg.shape[0] + qg.shape[1]

    def query_gallery(self, start: int, stop: int) -> torch.Tensor:
        """``original_dist[start:stop, Q:]`` of query rows."""
        return self.qg[start:stop].pow(2).float() / self.row_max[start:stop, None]

    def entries(self, ids: torch.Tensor) -> torch.Tensor:
        """``original_dist[i, ids[i, m]]`` for every row ``i`` (``ids`` >= 0)."""
        q = self.num_q
        row = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(ids)
        query_row, query_col = row < q, ids < q
        value = torch.empty(ids.shape, dtype=self.qg.dtype, device=ids.device)
        for mask, matrix, r, c in ((query_row & query_col, self.qq, row, ids),
                                   (query_row & ~query_col, self.qg, row, ids - q),
                                   (~query_row & query_col, self.qg, ids, row - q),  # qg^T
                                   (~query_row & ~query_col, self.gg, row - q, ids - q)):
            value[mask] = matrix[r[mask], c[mask]]
        return value.pow(2).float() / self.row_max[:, None]


def _reciprocal(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """``mask[i, m]``: ``ranks[i, m]`` is a k-reciprocal neighbour of ``i`` (``i`` among its ``k`` nearest)."""
    forward = ranks[:, :k]
    me = torch.arange(ranks.shape[0], device=ranks.device)[:, None, None]
    return (ranks[forward][:, :, :k] == me).any(-1)


def _expanded_support(ranks: torch.Tensor, half: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """torchreid's ``k_reciprocal_expansion_index`` of every row as padded ``(ids, valid)``, ids ascending.

    A candidate's k/2-reciprocal set joins when more than 2/3 of it lies in the row's k-reciprocal set.
    """
    num, k = ranks.shape
    recip = _reciprocal(ranks, k)  # (N, k)
    half_recip = _reciprocal(ranks, half)  # (N, half)
    members = torch.where(recip, ranks, -1)  # the row's k-reciprocal set, -1 padded
    cand_sets = torch.where(half_recip, ranks[:, :half], -1)[ranks]  # (N, k, half): each candidate's set
    cand_valid = (cand_sets >= 0) & recip[:, :, None]
    inside = (cand_sets[..., None] == members[:, None, None, :]).any(-1) & cand_valid
    size, common = cand_valid.sum(-1).double(), inside.sum(-1).double()
    accepted = recip & (common > (2.0 / 3.0) * size)  # float comparison, as torchreid's
    ids = torch.cat([members, torch.where(accepted[:, :, None] & cand_valid, cand_sets, -1).flatten(1)], 1)
    ids, _ = ids.sort(dim=1)
    duplicate = torch.zeros_like(ids, dtype=torch.bool)
    duplicate[:, 1:] = ids[:, 1:] == ids[:, :-1]
    return ids, (ids >= 0) & ~duplicate


def _encode(rows: _DistanceRows, support: Tuple[torch.Tensor, torch.Tensor]):
    """CSR of ``V``: ``exp(-dist)`` over each row's expanded set, normalised to sum 1."""
    ids, valid = support
    weights = torch.where(valid, torch.exp(-rows.entries(ids.clamp(min=0))), 0.0)
    weights = weights / weights.sum(1, keepdim=True)
    counts = valid.sum(1)
    crow = torch.zeros(ids.shape[0] + 1, dtype=torch.int64, device=ids.device)
    crow[1:] = counts.cumsum(0)
    return crow, ids[valid], weights[valid]


def _gather_rows(crow: torch.Tensor, rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Positions in the CSR arrays of the entries of ``rows`` (in order), and the position in ``rows`` of each."""
    starts, lengths = crow[rows], crow[rows + 1] - crow[rows]
    owner = torch.repeat_interleave(torch.arange(len(rows), device=crow.device), lengths)
    offsets = torch.arange(int(lengths.sum()), device=crow.device) - torch.repeat_interleave(
        lengths.cumsum(0) - lengths, lengths)
    return starts[owner] + offsets, owner


def _query_expansion(crow, col, val, neighbours: torch.Tensor):
    """``V_qe[i] = mean(V[neighbours[i]])``, sparse."""
    num, k2 = neighbours.shape
    positions, owner = _gather_rows(crow, neighbours.reshape(-1))
    row = owner // k2
    key = row * num + col[positions]
    unique, inverse = torch.unique(key, return_inverse=True)
    summed = torch.zeros(len(unique), dtype=torch.float32, device=val.device).index_add_(0, inverse, val[positions])
    new_crow = torch.zeros(num + 1, dtype=torch.int64, device=val.device)
    new_crow[1:] = torch.bincount(unique // num, minlength=num).cumsum(0)
    return new_crow, unique % num, summed / k2


def _columns_of_rows(crow, col, val, first_row: int, num_cols: int):
    """The column lists (CSC) of rows ``first_row..`` of the CSR matrix: for each column, its rows and values."""
    start = int(crow[first_row])
    rows = torch.repeat_interleave(torch.arange(len(crow) - 1, device=col.device), crow[1:] - crow[:-1])[start:]
    cols, values = col[start:], val[start:]
    order = torch.argsort(cols, stable=True)
    ccol = torch.zeros(num_cols + 1, dtype=torch.int64, device=col.device)
    ccol[1:] = torch.bincount(cols, minlength=num_cols).cumsum(0)
    return ccol, rows[order], values[order]


def _min_overlap(crow, col, val, by_column, start: int, stop: int, num: int) -> torch.Tensor:
    """``sum_k min(V[i, k], V[j, k])`` for rows ``start..stop`` against every row of the column lists."""
    ccol, crows, cvals = by_column
    positions, owner = _gather_rows(crow, torch.arange(start, stop, device=crow.device))
    pairs, entry = _gather_rows(ccol, col[positions])
    contribution = torch.minimum(val[positions][entry], cvals[pairs])
    flat = owner[entry] * num + crows[pairs]
    out = torch.zeros((stop - start) * num, dtype=torch.float32, device=val.device)
    return out.index_add_(0, flat, contribution).view(stop - start, num)
