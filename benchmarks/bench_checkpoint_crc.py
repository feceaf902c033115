"""What the CRC-32 check costs when a checkpoint loads: ``torch.load`` alone vs ``load_checkpoint`` (check + load).

A ViT-B/16 state dict at 256x128 (``lfem_vit_base_patch16_s11_256x128``: ViT-B plus JPM and LFEM, random
values, a few hundred MB) is written with ``save_checkpoint`` to a temporary folder (default /tmp); then each of
``verify_checkpoint_file``,
``torch.load(weights_only=True)`` and ``load_checkpoint`` runs ``--repeats`` times, file in the page cache (the
usual case right after training or a copy), and the median seconds are kept. ``--cold`` also drops the file from
the page cache before each run (``posix_fadvise(DONTNEED)``), so disk reads count too.

Usage: python benchmarks/bench_checkpoint_crc.py [--model lfem_vit_base_patch16_s11_256x128] [--repeats 5] [--cold]
       python benchmarks/bench_checkpoint_crc.py --smoke      (tiny model, 2 repeats: checks the script only)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict

import torch


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _median_seconds(run: Callable[[], object], path: Path, repeats: int, cold: bool) -> float:
    times = []
    for _ in range(repeats):
        if cold:
            _drop_cache(path)
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model_name: str, repeats: int, cold: bool, folder: str) -> Dict[str, object]:
    import lfem_plugin  # noqa: F401  (registers the models)
    from lfem_plugin.registry import MODELS
    from lfem_plugin.utils.checkpoint import load_checkpoint, save_checkpoint
    from lfem_plugin.utils.checkpoint_file import verify_checkpoint_file
    model = MODELS.get(model_name)(num_classes=702)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = save_checkpoint({"state_dict": model.state_dict(), "epoch": 1}, Path(tmp) / "model.pth.tar-1")
        size = path.stat().st_size
        load_checkpoint(path)  # warm-up: imports, allow-list, page cache
        runs = {"verify_crc_s": lambda: verify_checkpoint_file(path),
                "torch_load_s": lambda: torch.load(path, map_location="cpu", weights_only=True),
                "load_checkpoint_s": lambda: load_checkpoint(path)}
        result = {name: _median_seconds(run, path, repeats, cold) for name, run in runs.items()}
    result["overhead_fraction"] = result["load_checkpoint_s"] / result["torch_load_s"] - 1
    result["crc_mb_per_s"] = size / 2**20 / result["verify_crc_s"]
    return {"model": model_name, "file_mb": round(size / 2**20, 1), "repeats": repeats,
            "page_cache": "dropped before each run" if cold else "warm", **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lfem_vit_base_patch16_s11_256x128")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="drop the file from the page cache before each run")
    parser.add_argument("--tmp", default="/tmp", help="folder for the temporary checkpoint")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 2 repeats, result not kept")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    model = "vit_transreid_tiny" if args.smoke else args.model
    row = measure(model, 2 if args.smoke else args.repeats, args.cold, args.tmp)
    print(f"{row['model']}: {row['file_mb']} MB, CRC check {row['verify_crc_s']:.3f} s "
          f"({row['crc_mb_per_s']:.0f} MB/s), torch.load {row['torch_load_s']:.3f} s, load_checkpoint "
          f"{row['load_checkpoint_s']:.3f} s (+{row['overhead_fraction']:.0%}); page cache {row['page_cache']}")
    if args.smoke:
        return
    payload = {"device": f"cpu-{platform.machine()}", "threads": torch.get_num_threads(), "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d"), "result": row}
    from lfem_plugin.utils.atomic import write_text
    name = f"bench_checkpoint_crc{'_cold' if args.cold else ''}.json"
    write_text(args.out / name, json.dumps(payload, indent=2) + "\n", "benchmark result")
    print(f"written {args.out / name}")


if __name__ == "__main__":
    main()
