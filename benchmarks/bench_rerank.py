"""k-reciprocal re-ranking: torchreid's numpy ``re_ranking`` vs ``lfem_plugin.metrics.re_ranking``, side by side.

For each (queries, gallery) size, 768-d features with identity structure (a centre per identity plus noise, so that
neighbourhoods look like a ReID set's) give the three distance matrices; each method runs in a fresh process that
reports its time and its peak memory above the inputs (Linux: peak RSS reset through /proc/self/clear_refs after the
inputs exist). The two outputs are compared (max absolute difference). torchreid is skipped at Occluded-Duke size
unless --torchreid-at-duke (it needs about 12 GB and minutes).

Usage: python benchmarks/bench_rerank.py [--sizes 552x4415 1105x8830 2210x17661] [--torchreid-at-duke] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import torch

from _fresh_process import run_fresh

DUKE = (2210, 17661)


def _distances(q: int, g: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    from lfem_plugin.metrics import compute_distance_matrix
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, max(1, g // 8), size=q + g)
    centres = rng.normal(size=(max(1, g // 8), 768)).astype(np.float32)
    feats = torch.from_numpy(centres[ids] + 0.8 * rng.normal(size=(q + g, 768)).astype(np.float32))
    qf, gf = feats[:q], feats[q:]
    return tuple(compute_distance_matrix(a, b).numpy() for a, b in ((qf, gf), (qf, qf), (gf, gf)))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _measure(method: str, q: int, g: int, out_path: str, queue) -> None:
    import warnings
    warnings.filterwarnings("ignore")
    from lfem_plugin import _torchreid
    from lfem_plugin.metrics import re_ranking
    fn = _torchreid.root().utils.re_ranking if method == "torchreid" else re_ranking
    qg, qq, gg = _distances(q, g)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    out = fn(qg, qq, gg)
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    np.save(out_path, out)
    queue.put({"seconds": seconds, "peak_above_inputs_mb": (peak - before) / 1024})


def _run(method: str, q: int, g: int, out_path: str) -> Dict[str, Any]:
    return run_fresh(_measure, (method, q, g, out_path), f"bench_rerank {method} at {q}x{g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["552x4415", "1105x8830", f"{DUKE[0]}x{DUKE[1]}"])
    parser.add_argument("--torchreid-at-duke", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    sizes = [(20, 60)] if args.smoke else [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for q, g in sizes:
            row: Dict[str, Any] = {"queries": q, "gallery": g}
            ours = _run("lfem_plugin", q, g, f"{tmp}/ours.npy")
            row["lfem_plugin"] = ours
            if (q, g) != DUKE or args.torchreid_at_duke:
                ref = _run("torchreid", q, g, f"{tmp}/ref.npy")
                row["torchreid"] = ref
                row["max_abs_diff"] = float(np.abs(np.load(f"{tmp}/ours.npy") - np.load(f"{tmp}/ref.npy")).max())
                row["speedup"] = ref["seconds"] / ours["seconds"]
                row["memory_ratio"] = ours["peak_above_inputs_mb"] / max(ref["peak_above_inputs_mb"], 1e-9)
            rows.append(row)
            text = f"{q:>5} x {g:<6} lfem_plugin {ours['seconds']:7.2f} s {ours['peak_above_inputs_mb']:8.0f} MB"
            if "torchreid" in row:
                text += (f" | torchreid {row['torchreid']['seconds']:7.2f} s "
                         f"{row['torchreid']['peak_above_inputs_mb']:8.0f} MB | {row['speedup']:.1f}x faster, "
                         f"memory x{row['memory_ratio']:.2f}, max |diff| {row['max_abs_diff']:.1e}")
            print(text, flush=True)
    payload = {"device": f"cpu-{platform.machine()}", "threads": torch.get_num_threads(), "torch": torch.__version__,
               "numpy": np.__version__, "date": time.strftime("%Y-%m-%d"), "results": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "bench_rerank_smoke.json" if args.smoke else "bench_rerank.json"
    (args.out / name).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written {args.out / name}")


if __name__ == "__main__":
    main()
