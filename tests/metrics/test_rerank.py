"""k-reciprocal re-ranking: the torch implementation against torchreid's numpy one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lfem_plugin import metrics
from lfem_plugin.metrics import compute_distance_matrix, re_ranking

from ..helpers import TR


def _distances(q, g, d, seed, levels=None):
    rng = np.random.default_rng(seed)
    if levels:  # quantised features: many exactly tied distances
        qf, gf = (torch.tensor(rng.integers(0, levels, size=(n, d)), dtype=torch.float32) for n in (q, g))
    else:
        qf, gf = (torch.tensor(rng.normal(size=(n, d)), dtype=torch.float32) for n in (q, g))
    return tuple(compute_distance_matrix(a, b).numpy() for a, b in ((qf, gf), (qf, qf), (gf, gf)))


@pytest.mark.parametrize("q, g, d", [(1, 1, 4), (3, 2, 4), (7, 1, 8), (5, 9, 8), (30, 120, 16), (64, 300, 32)])
@pytest.mark.parametrize("k1, k2, lam", [(20, 6, 0.3), (5, 1, 0.3), (3, 2, 0.0), (8, 3, 1.0)])
def test_same_result_as_torchreid(q, g, d, k1, k2, lam):
    dists = _distances(q, g, d, seed=q * 1000 + g)
    ref = TR.utils.re_ranking(*dists, k1=k1, k2=k2, lambda_value=lam)
    out = re_ranking(*dists, k1=k1, k2=k2, lambda_value=lam)
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", range(40))
def test_same_result_as_torchreid_with_ties(seed):
    rng = np.random.default_rng(seed)
    q, g = int(rng.integers(1, 8)), int(rng.integers(1, 40))
    dists = _distances(q, g, 2, seed, levels=3)  # 9 distinct points: duplicates everywhere
    for k1, k2 in ((20, 6), (3, 2), (2, 1)):
        ref = TR.utils.re_ranking(*dists, k1=k1, k2=k2)
        np.testing.assert_allclose(re_ranking(*dists, k1=k1, k2=k2), ref, atol=1e-5, rtol=0)


def test_torch_inputs_and_float64_inputs():
    dists = _distances(6, 20, 8, seed=5)
    ref = TR.utils.re_ranking(*dists)
    np.testing.assert_allclose(re_ranking(*(torch.from_numpy(x) for x in dists)), ref, atol=1e-5, rtol=0)
    wide = [x.astype(np.float64) for x in dists]
    np.testing.assert_allclose(re_ranking(*wide), TR.utils.re_ranking(*wide), atol=1e-5, rtol=0)


def test_small_blocks_give_the_same_result():
    dists = _distances(9, 50, 8, seed=7)
    np.testing.assert_array_equal(re_ranking(*dists, block=8), re_ranking(*dists))


def test_bad_inputs_are_named():
    qg, qq, gg = _distances(3, 5, 4, seed=1)
    with pytest.raises(ValueError, match="do not fit together"):
        re_ranking(qg, gg, qq)
    with pytest.raises(ValueError, match="at least 1"):
        re_ranking(qg, qq, gg, k1=0)


def test_the_engine_re_ranks_with_it(monkeypatch):
    from ..helpers import tiny_engine
    calls = []
    monkeypatch.setattr("lfem_plugin.engine.evaluation.re_ranking",
                        lambda *a: calls.append(a) or metrics.re_ranking(*a))
    engine = tiny_engine()
    rng = np.random.default_rng(0)
    feats = torch.tensor(rng.normal(size=(12, 8)), dtype=torch.float32)
    pids, cams = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3, 3]), np.array([0] * 3 + [1] * 9)
    monkeypatch.setattr(engine, "_extract", lambda loader, sie=None: (feats[:3], pids[:3], cams[:3]) if loader == "q"
                        else (feats[3:], pids[3:], cams[3:]))
    engine._evaluate("toy", "q", "g", rerank=True, ranks=[1])
    assert len(calls) == 1
    plain = TR.utils.re_ranking(*(compute_distance_matrix(a, b).numpy()
                                  for a, b in ((feats[:3], feats[3:]), (feats[:3], feats[:3]), (feats[3:], feats[3:]))))
    expected = metrics.evaluate_rank(plain, pids[:3], pids[3:], cams[:3], cams[3:])
    assert engine.last_results["toy"]["mAP"] == pytest.approx(float(expected[1]), abs=1e-6)
