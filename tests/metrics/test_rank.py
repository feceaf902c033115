import types
import warnings

import numpy as np
import pytest

from lfem_plugin import _torchreid
from lfem_plugin.metrics import evaluate_rank

TR = _torchreid.root()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import importlib
    rank_module = importlib.import_module(TR.__name__ + ".metrics.rank")


class _StableNumpy(types.ModuleType):
    """numpy with a stable argsort: torchreid's tie order is implementation-defined, ours is stable."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def argsort(a, axis=-1):
        return np.argsort(a, axis=axis, kind="stable")


def _random_case(rng, ties):
    q, g = int(rng.integers(1, 25)), int(rng.integers(1, 70))
    npid = int(rng.integers(1, 8))
    args = (rng.integers(0, npid, q), rng.integers(0, npid, g), rng.integers(0, 3, q), rng.integers(0, 3, g))
    dist = rng.random((q, g)).astype(np.float32)
    if ties:
        dist = np.round(dist * 3).astype(np.float32)
    return dist, args


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("ties", [False, True])
def test_evaluator_equals_torchreid(ties, backend, monkeypatch):
    if ties:
        monkeypatch.setattr(rank_module, "np", _StableNumpy("np"))
    rng = np.random.default_rng(int(ties))
    checked = 0
    for _ in range(300):
        dist, args = _random_case(rng, ties)
        max_rank = int(rng.integers(1, 80))
        try:
            ref = rank_module.evaluate_rank(dist, *args, max_rank=max_rank, use_cython=False)
        except (AssertionError, ValueError):
            # torchreid fails when no query is valid (we raise too) or a query keeps fewer than max_rank items
            continue
        cmc, mAP = evaluate_rank(dist, *args, max_rank=max_rank, backend=backend)
        assert cmc.dtype == np.float32 and len(cmc) == min(max_rank, dist.shape[1])
        # torchreid returns a shorter CMC when every query keeps fewer gallery items than max_rank; ours pads
        assert np.array_equal(cmc[:len(ref[0])], ref[0]) and np.all(cmc[len(ref[0]):] == ref[0][-1])
        assert abs(mAP - ref[1]) < 1e-6
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_evaluator_tiny_gallery_and_no_match(backend):
    cmc, mAP = evaluate_rank(np.array([[0.1, 0.2]], np.float32), [1], [2, 1], [0], [1, 1], max_rank=50,
                             backend=backend)
    assert cmc.tolist() == [0.0, 1.0] and mAP == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no query has a match"):
        evaluate_rank(np.array([[0.1]], np.float32), [1], [1], [0], [0], backend=backend)


def test_evaluator_backends_agree_at_scale():
    rng = np.random.default_rng(3)
    dist = rng.random((300, 2000)).astype(np.float32)
    dist[:, ::7] = 0.5  # many exact ties
    args = (rng.integers(0, 60, 300), rng.integers(0, 60, 2000), rng.integers(0, 6, 300), rng.integers(0, 6, 2000))
    a, b = evaluate_rank(dist, *args, backend="torch"), evaluate_rank(dist, *args, backend="numba")
    assert np.array_equal(a[0], b[0]) and a[1] == pytest.approx(b[1], abs=1e-12)


def test_evaluator_chunking_is_invisible():
    rng = np.random.default_rng(5)
    dist, args = _random_case(rng, ties=True)
    dist = rng.random((40, 60)).astype(np.float32)
    args = (rng.integers(0, 5, 40), rng.integers(0, 5, 60), rng.integers(0, 3, 40), rng.integers(0, 3, 60))
    a = evaluate_rank(dist, *args, max_rank=10)
    b = evaluate_rank(dist, *args, max_rank=10, chunk_elements=60 * 3)
    assert np.array_equal(a[0], b[0]) and a[1] == pytest.approx(b[1], abs=1e-12)
