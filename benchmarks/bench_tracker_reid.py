"""ReID speed as a tracker meets it: crops/s at batch 1, 8 and 32, on torch and on ONNX Runtime (the tracker graph of
``lfem-reid export --for ultralytics``: the fused input affine included), for the plugin's tiny model, a DeiT-S and
the paper's ViT-B s11 at 256x128, beside BoxMOT's default ReID architecture ``osnet_x0_25`` (torchreid's, random
weights: speed needs none), all measured in the same run; the frame rate each allows with 10 people in view.

Usage: python benchmarks/bench_tracker_reid.py [--models lfem_vit_tiny lfem_deit_small_patch16_s16_256x128 lfem_vit
       osnet_x0_25] [--batches 1 8 32] [--iters 5] [--warmup 2] [--threads N] [--device cpu|cuda]
       [--out benchmarks/results/trackers/...]
On ``--device cuda`` torch runs on the GPU (fp32, synchronised around each timed loop) and ONNX Runtime on its CUDA
provider where the installed onnxruntime has one (else the row says ``CPUExecutionProvider``); ONNX Runtime is fed a
host array each call, so its GPU rate includes the copies to and from the GPU (as a tracker calling ``session.run``
with numpy crops meets it), while torch's input is already on the GPU.
Run it alone on the machine (timings): nothing else heavy at the same time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

_SIZES = {"lfem_vit_tiny": (64, 32)}  # the others: 256x128


def _model(name: str):
    from lfem_plugin import _torchreid
    from lfem_plugin.registry import MODELS
    from lfem_plugin.tools.tracker_export import TrackerGraph, tracker_model
    if name in MODELS:
        model = MODELS.get(name)(num_classes=10, loss="triplet", pretrained=False, num_cameras=2, camera_ids=[0, 1])
    else:
        model = _torchreid.root().models.build_model(name, num_classes=10, loss="softmax", pretrained=False)
    graph = TrackerGraph(tracker_model(model.eval()), (0.0,) * 3, (1.0,) * 3, (0.5,) * 3, (0.5,) * 3).eval()
    return graph, _SIZES.get(name, (256, 128))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(run, batch: int, iters: int, warmup: int, device: str = "cpu") -> float:
    for _ in range(warmup):
        run()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        run()
    _sync(device)
    return batch * iters / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["lfem_vit_tiny", "lfem_deit_small_patch16_s16_256x128",
                                                        "lfem_vit", "osnet_x0_25"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/trackers/bench_tracker_reid_<machine or GPU>_torch<v>.json")
    args = parser.parse_args()
    where = torch.cuda.get_device_name().replace(" ", "_") if args.device.startswith("cuda") else platform.machine()
    args.out = args.out or Path(f"benchmarks/results/trackers/bench_tracker_reid_{where}_torch{torch.__version__}.json")
    import onnxruntime as ort

    from lfem_plugin.tools.export import _export
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        graph, (h, w) = _model(name)
        graph = graph.to(args.device)
        with tempfile.TemporaryDirectory() as folder:
            path = str(Path(folder) / "m.onnx")
            _export(graph.cpu(), (torch.rand(2, 3, h, w),), ["images"], path)
            graph.to(args.device)
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            providers = (["CUDAExecutionProvider"] if args.device.startswith("cuda") and "CUDAExecutionProvider"
                         in ort.get_available_providers() else []) + ["CPUExecutionProvider"]
            session = ort.InferenceSession(path, options, providers=providers)
            for batch in args.batches:
                x = torch.rand(batch, 3, h, w)
                x_dev = x.to(args.device)  # the crops on the device, as a tracker's GPU pipeline holds them
                with torch.no_grad():
                    torch_rate = _time(lambda: graph(x_dev), batch, args.iters, args.warmup, args.device)
                ort_rate = _time(lambda: session.run(None, {"images": x.numpy()}), batch, args.iters, args.warmup)
                rows.append({"model": name, "input": [h, w], "batch": batch, "device": args.device,
                             "onnxruntime_provider": session.get_providers()[0],
                             "onnxruntime_input": "host numpy array per call (copies timed)",
                             "torch_crops_per_s": round(torch_rate, 1),
                             "onnxruntime_crops_per_s": round(ort_rate, 1),
                             "fps_10_people_torch": round(torch_rate / 10, 2),
                             "fps_10_people_onnxruntime": round(ort_rate / 10, 2)})
                print(json.dumps(rows[-1]))
    base = {r["batch"]: r for r in rows if r["model"] == "osnet_x0_25"}
    for r in rows:
        if r["batch"] in base:
            r["torch_vs_osnet_x0_25"] = round(r["torch_crops_per_s"] / base[r["batch"]]["torch_crops_per_s"], 3)
    record = {"about": __doc__.split("\n\n")[0], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} threads, "
                         + (f"GPU {torch.cuda.get_device_name()}, " if args.device.startswith("cuda") else "")
                         + f"torch {torch.__version__}, onnxruntime {ort.__version__}", "iters": args.iters,
              "warmup": args.warmup, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
