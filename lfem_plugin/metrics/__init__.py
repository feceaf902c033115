"""ReID metrics: CMC / mAP (:mod:`.rank`), distance matrices (:mod:`.distance`), k-reciprocal re-ranking
(:mod:`.rerank`). Plain tensors and arrays in, numbers out; nothing here reads a config."""
from __future__ import annotations

from .distance import compute_distance_matrix
from .rank import evaluate_rank
from .rerank import re_ranking

__all__ = ["evaluate_rank", "compute_distance_matrix", "re_ranking"]
