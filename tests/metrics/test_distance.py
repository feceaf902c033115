import pytest
import torch

from lfem_plugin import _torchreid
from lfem_plugin.metrics import compute_distance_matrix

TR = _torchreid.root()


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_distance_matrix_matches_torchreid(metric):
    q, g = torch.randn(7, 16), torch.randn(9, 16)
    ref = TR.metrics.compute_distance_matrix(q, g, metric)
    assert torch.allclose(compute_distance_matrix(q, g, metric, chunk_size=3), ref, atol=1e-5)
