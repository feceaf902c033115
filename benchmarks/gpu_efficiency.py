"""How far the paper config's training and evaluation are from the GPU's limit (issue 27), in one run of < 8 minutes.

On synthetic Occluded-Duke-shaped data with random weights (no data, no network): ``lfem-reid doctor`` eager and
compiled (images/s, FLOPs per image, fraction of the dense bf16 peak), the host syncs of a training step (CUDA's
sync debug mode), a ``torch.profiler`` profile of training steps (top kernels and their share of device time) and
evaluation images/s in fp32 and bf16 at two batch sizes, through the loader and on device-resident batches (the
model alone). Writes ``gpu_efficiency_<device>_<date>.json`` (and the doctor reports) under ``--out``.

Usage, on the GPU machine (see /work/shared/notes/gpu_device.md for the wheels):
    python3 benchmarks/gpu_efficiency.py --out "$OUT"
On the CPU, the same code path on the tiny model in a minute or two (checks the script before device time is spent):
    python3 benchmarks/gpu_efficiency.py --out /tmp/eff --cpu-smoke
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lfem_plugin  # noqa: E402,F401
from lfem_plugin import config as C  # noqa: E402
from lfem_plugin.tools import doctor, synthetic, train as T  # noqa: E402

PAPER = REPO / "configs" / "occluded_duke" / "lfem_vit_base_s11_256x128.yaml"
TINY = REPO / "configs" / "orl" / "lfem_vit_tiny_64x32_cpu.yaml"


def _config(smoke: bool, root: str, *opts: str):
    """The paper config (the tiny one on the CPU) on the synthetic data under ``root`` (written on the first call)."""
    base = [] if smoke else ["data.workers", "12"]
    tiny = ["data.sources", "['occluded_duke']", "data.targets", "['occluded_duke']", "data.workers", "0",
            "train.batch_size", "16", "sampler.num_instances", "4"] if smoke else []
    cfg = C.load_config(TINY if smoke else PAPER, ["model.pretrained", "False", *base, *tiny, *opts])
    if not any(Path(root).iterdir()):
        return synthetic.synthetic_config(cfg, root)
    cfg.defrost()
    cfg.data.root = root
    cfg.freeze()
    return cfg


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batches(engine, count: int) -> List[Dict[str, Any]]:
    loader = iter(engine.train_loader)
    return [next(loader) for _ in range(count)]


def host_syncs(engine, batches) -> Dict[str, Any]:
    """Device syncs CUDA reports in training steps (sync debug mode 'warn'); 0 expected. CPU: not measurable."""
    if engine.device.type != "cuda":
        return {"syncs_per_step": None}
    engine.forward_backward(batches[0])
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for data in batches[1:]:
                engine.forward_backward(data)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    return {"syncs_per_step": len(syncs) / max(1, len(batches) - 1), "sync_messages": sorted(set(syncs))[:10]}


def profile_steps(engine, batches, top: int = 25) -> Dict[str, Any]:
    """``torch.profiler`` over training steps: the operators/kernels with the most self device time (CPU time on
    the CPU), each with its share of the total."""
    from torch.profiler import ProfilerActivity, profile
    cuda = engine.device.type == "cuda"
    for data in batches[:2]:  # warm: allocator, cuDNN/cuBLAS heuristics, compilation
        engine.forward_backward(data)
    _sync(engine.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for data in batches[2:]:
            engine.forward_backward(data)
        _sync(engine.device)
    wall = (time.perf_counter() - start) / max(1, len(batches) - 2)
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    if cuda:  # kernels only: CPU-side operator rows have no device time of their own
        events = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(getattr(e, attr) for e in events)
    rows = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:top]
    return {"profiled_steps": len(batches) - 2, "step_wall_s": wall, "device_time_per_step_s":
            total / 1e6 / max(1, len(batches) - 2), "time_kind": "device (self)" if cuda else "cpu (self)",
            "top": [{"name": e.key[:160], "calls": e.count, "time_s": getattr(e, attr) / 1e6,
                     "share": getattr(e, attr) / total} for e in rows]}


def eval_rates(engine, dm, images: int, batch_sizes, amps) -> List[Dict[str, Any]]:
    """Evaluation images/s per (amp, batch): through the test loader, and on one device-resident batch repeated
    (the model alone, no loader, no copy)."""
    name = next(iter(dm.test_loader))
    gallery = dm.test_loader[name]["gallery"]
    engine.set_model_mode("eval")
    out = []
    for amp in amps:
        engine.eval_amp = amp if engine.device.type == "cuda" else "off"
        for batch in batch_sizes:
            count = max(batch, min(images, len(gallery.dataset)) // batch * batch)
            subset = torch.utils.data.Subset(gallery.dataset, range(count))
            loader = torch.utils.data.DataLoader(subset, batch_size=batch, num_workers=gallery.num_workers,
                                                 pin_memory=engine.device.type == "cuda")
            first = torch.utils.data.DataLoader(torch.utils.data.Subset(gallery.dataset, range(batch)),
                                                batch_size=batch)
            engine._extract(first)  # warm: set-up, compilation for this shape
            _sync(engine.device)
            start = time.perf_counter()
            engine._extract(loader)
            _sync(engine.device)
            through_loader = count / (time.perf_counter() - start)
            out.append({"amp": amp, "batch": batch, "images": count, "images_per_s": through_loader,
                        "model_only_images_per_s": _model_only(engine, next(iter(first))["img"], engine.eval_amp)})
    engine.eval_amp = "off"
    return out


@torch.no_grad()
def _model_only(engine, images: torch.Tensor, amp: str, repeats: int = 5) -> float:
    images = images.to(engine.device)
    cameras = torch.zeros(images.shape[0], dtype=torch.long, device=engine.device)
    times = []
    for _ in range(repeats + 1):
        _sync(engine.device)
        start = time.perf_counter()
        with torch.autocast(engine.device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            engine.extract_features(images, cameras)
        _sync(engine.device)
        times.append(time.perf_counter() - start)
    return images.shape[0] / statistics.median(times[1:])


def _doctor(cfg, smoke: bool, out: Path, tag: str) -> Dict[str, Any]:
    start = time.perf_counter()
    report = doctor.run_doctor(cfg, iters=2 if smoke else 20, warmup=1 if smoke else 5,
                               fixed_steps=2 if smoke else 4, eval_images=32 if smoke else 2048)
    report["doctor_wall_s"] = time.perf_counter() - start
    (out / f"doctor_{tag}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(doctor.format_report(report), flush=True)
    return report


def _engine_parts(cfg, smoke: bool) -> Dict[str, Any]:
    """Host syncs, the profile and evaluation rates on one engine built as ``train`` builds it."""
    built = T.set_up(cfg)
    dm, engine = built.datamanager, built.engine
    engine.set_model_mode("train")
    batches = _batches(engine, 4 if smoke else 8)
    result = {"host_syncs": host_syncs(engine, batches[:4]), "profile": profile_steps(engine, batches)}
    result["eval"] = eval_rates(engine, dm, 64 if smoke else 4096, (16, 32) if smoke else (256, 1024),
                                ("off", "bf16"))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON files")
    parser.add_argument("--cpu-smoke", action="store_true", help="the tiny model on the CPU (checks the script)")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the compiled doctor run")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.cpu_smoke
    device = torch.cuda.get_device_name() if cuda else "cpu"
    result: Dict[str, Any] = {"device": device, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                              "smoke": args.cpu_smoke, "config": str((TINY if args.cpu_smoke else PAPER).name)}
    started = time.perf_counter()
    use_gpu = [] if cuda else ["use_gpu", "False"]
    with tempfile.TemporaryDirectory(prefix="lfem-eff-") as root:
        result["doctor_eager"] = _doctor(_config(args.cpu_smoke, root, *use_gpu), args.cpu_smoke, args.out, "eager")
        result.update(_engine_parts(_config(args.cpu_smoke, root, *use_gpu), args.cpu_smoke))
        print(json.dumps({k: result[k] for k in ("host_syncs", "eval")}, indent=1), flush=True)
        if not args.skip_compile:
            result["doctor_compiled"] = _doctor(_config(args.cpu_smoke, root, *use_gpu, "lfem.compile", "True"),
                                                args.cpu_smoke, args.out, "compiled")
    result["wall_s"] = time.perf_counter() - started
    name = re.sub(r"[^A-Za-z0-9]+", "_", device).strip("_")
    path = args.out / f"gpu_efficiency_{name}_{result['date']}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path} in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
