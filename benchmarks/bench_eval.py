"""Time lfem_plugin's evaluator against torchreid's python ``evaluate_rank`` at Occluded-Duke size, side by side.

Usage: python benchmarks/bench_eval.py [--lists DIR_WITH_OCCLUDED_DUKE_LISTS] [--repeats 5] [--out DIR]
       python benchmarks/bench_eval.py --msmt17 [--out DIR]

The distance matrix is random (float32, from L2-normalised random features); identities and cameras come from the
official Occluded-Duke lists when ``--lists`` is given, else are drawn with the same sizes (2,210 x 17,661).
``--msmt17``: the largest benchmark the configs ship (11,659 queries x 82,161 gallery images of 3,060 identities, 15
cameras, 768-d features): the distance matrix, lfem_plugin's evaluation, the process's peak memory, and torchreid's
python loop on the first 500 queries only (it goes query by query, so its time grows linearly with the queries).
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
    parser.add_argument("--msmt17", action="store_true", help="MSMT17 size (see above)")
    args = parser.parse_args()
    if args.msmt17:
        return bench_msmt17(args.out)
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


def bench_msmt17(out: Path, num_q: int = 11659, num_g: int = 82161, ids: int = 3060, cams: int = 15,
                 torchreid_queries: int = 500) -> None:
    import resource
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import importlib

        from lfem_plugin import _torchreid
        from lfem_plugin.metrics import compute_distance_matrix, evaluate_rank
        ref_rank = importlib.import_module(_torchreid.root().__name__ + ".metrics.rank")
    rng = np.random.default_rng(0)
    g_pids, g_cams = rng.integers(0, ids, num_g), rng.integers(0, cams, num_g)
    q_pids, q_cams = rng.choice(np.unique(g_pids), num_q), rng.integers(0, cams, num_q)
    feats = torch.nn.functional.normalize(torch.randn(num_q + num_g, 768), dim=1)
    start = time.perf_counter()
    distmat = compute_distance_matrix(feats[:num_q], feats[num_q:]).numpy()
    t_dist = time.perf_counter() - start
    evaluate_rank(distmat[:8], q_pids[:8], g_pids, q_cams[:8], g_cams)  # load the numba kernel
    start = time.perf_counter()
    evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams)
    t_ours = time.perf_counter() - start
    sub = slice(0, torchreid_queries)
    start = time.perf_counter()
    ref = ref_rank.evaluate_rank(distmat[sub], q_pids[sub], g_pids, q_cams[sub], g_cams, use_cython=False)
    t_ref = time.perf_counter() - start
    start = time.perf_counter()
    ours = evaluate_rank(distmat[sub], q_pids[sub], g_pids, q_cams[sub], g_cams)
    t_ours_sub = time.perf_counter() - start
    result = {"query": num_q, "gallery": num_g, "distance_matrix_s": t_dist, "lfem_plugin_eval_s": t_ours,
              "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
              "distmat_gb": distmat.nbytes / 2**30, "subset_queries": torchreid_queries,
              "subset_torchreid_python_s": t_ref, "subset_lfem_plugin_s": t_ours_sub,
              "subset_speedup": t_ref / t_ours_sub, "subset_cmc_equal": bool(np.array_equal(ref[0], ours[0])),
              "subset_map_abs_diff": abs(ref[1] - ours[1]), "machine": platform.machine(),
              "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    print(f"MSMT17 size {num_q} x {num_g}: distance matrix {t_dist:.1f} s ({result['distmat_gb']:.2f} GB), "
          f"lfem_plugin evaluation {t_ours:.1f} s, peak RSS {result['peak_rss_gb']:.1f} GB")
    print(f"first {torchreid_queries} queries: torchreid python {t_ref:.1f} s, lfem_plugin {t_ours_sub:.2f} s "
          f"({result['subset_speedup']:.0f}x), CMC identical: {result['subset_cmc_equal']}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_eval_msmt17.json").write_text(json.dumps(result, indent=2))
    print(f"written {out / 'bench_eval_msmt17.json'}")


if __name__ == "__main__":
    main()
