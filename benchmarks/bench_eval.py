"""Time lfem_plugin's evaluator against torchreid's python ``evaluate_rank`` at Occluded-Duke size, side by side.

Usage: python benchmarks/bench_eval.py [--lists DIR_WITH_OCCLUDED_DUKE_LISTS] [--repeats 5] [--out DIR]

The distance matrix is random (float32, from L2-normalised random features); identities and cameras come from the
official Occluded-Duke lists when ``--lists`` is given, else are drawn with the same sizes (2,210 x 17,661).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def labels(lists: Path | None, rng: np.random.Generator):
    if lists is None:
        g_pids = rng.integers(0, 1110, 17661)
        q_pids = rng.choice(np.unique(g_pids), 2210)
        return q_pids, g_pids, rng.integers(0, 8, 2210), rng.integers(0, 8, 17661)
    from lfem_plugin.data.io import parse_reid_name
    out = []
    for split in ("query", "gallery"):
        names = (lists / f"{split}.list").read_text().split()
        parsed = [parse_reid_name(n) for n in names]
        out.append((np.array([pid for pid, _ in parsed]), np.array([cam for _, cam in parsed])))
    (q_pids, q_cams), (g_pids, g_cams) = out
    return q_pids, g_pids, q_cams, g_cams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lists", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import lfem_plugin  # noqa: F401
        from lfem_plugin import _torchreid
        from lfem_plugin.metrics import compute_distance_matrix, evaluate_rank
        import importlib
        ref_rank = importlib.import_module(_torchreid.root().__name__ + ".metrics.rank")
    rng = np.random.default_rng(0)
    q_pids, g_pids, q_cams, g_cams = labels(args.lists, rng)
    if args.smoke:
        q_pids, q_cams, g_pids, g_cams = q_pids[:50], q_cams[:50], g_pids[:400], g_cams[:400]
    feats = torch.nn.functional.normalize(torch.randn(len(q_pids) + len(g_pids), 256), dim=1)
    distmat = compute_distance_matrix(feats[:len(q_pids)], feats[len(q_pids):]).numpy()

    start = time.perf_counter()
    ref = ref_rank.evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, use_cython=False)
    t_ref = time.perf_counter() - start
    result = {"query": len(q_pids), "gallery": len(g_pids), "torchreid_python_s": t_ref,
              "machine": platform.machine(), "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d")}
    print(f"torchreid evaluate_rank (python):        {t_ref:.2f} s")
    for backend in ("numba", "torch"):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, backend=backend)
            times.append(time.perf_counter() - start)
        t_ours = float(np.median(times))
        result[backend] = {"seconds": t_ours, "first_call_s": times[0], "speedup": t_ref / t_ours,
                           "cmc_equal": bool(np.array_equal(ref[0], ours[0])), "map_abs_diff": abs(ref[1] - ours[1])}
        print(f"lfem_plugin evaluate_rank ({backend:>5} backend): {t_ours:.3f} s (median of {args.repeats}; first "
              f"call {times[0]:.3f} s incl. JIT/cache load)  speed-up {t_ref / t_ours:.0f}x  CMC identical: "
              f"{result[backend]['cmc_equal']}  |mAP diff| {result[backend]['map_abs_diff']:.1e}")
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"bench_eval_{'smoke' if args.smoke else 'occluded_duke'}_{platform.node() or 'cpu'}.json"
    (args.out / name).write_text(json.dumps(result, indent=2))
    print(f"written {args.out / name}")


if __name__ == "__main__":
    main()
