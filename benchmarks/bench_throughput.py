"""Training / inference throughput and peak memory: lfem_vit (3 views), vit_transreid (1 view), plain timm ViT.

GPU mode (default when CUDA is available): the paper's ViT-B/16 stride 11 at 256x128, batch 48 x 3 views, bf16
autocast. CPU mode: the tiny variants at 64x32 so that it finishes in a few minutes. The plain ViT is timm's
``VisionTransformer`` with the same width/depth and the same number of tokens (a 22x11 grid at stride 16 is a
352x176 input). Each model is measured in a fresh process (clean peak memory: CUDA max allocated, or process RSS).

Usage: python benchmarks/bench_throughput.py [--device cpu|cuda] [--batch N] [--steps N] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import time
from pathlib import Path
from typing import Any, Dict

import torch

from _fresh_process import run_fresh


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _build(kind: str, geometry: Dict[str, Any], num_classes: int):
    import timm

    import lfem_plugin  # noqa: F401
    from lfem_plugin.models.lfem_vit import create_lfem_vit
    arch, (h, w), stride = geometry["arch"], geometry["img_size"], geometry["stride"]
    if kind == "lfem_vit":
        return create_lfem_vit(arch, num_classes, img_size=(h, w), stride=stride, num_cameras=8, num_views=3)
    if kind == "vit_transreid":
        return create_lfem_vit(arch, num_classes, img_size=(h, w), stride=stride, num_cameras=8, num_views=1,
                               use_lfem=False, local_feature="jpm", eval_feature="concat")
    from lfem_plugin.models.backbones import ARCHS
    from lfem_plugin.models.patch_embed import patch_grid
    spec = ARCHS[arch]
    rows, cols = patch_grid((h, w), 16, stride)
    return timm.models.VisionTransformer(img_size=(rows * 16, cols * 16), patch_size=16, embed_dim=spec["embed_dim"],
                                         depth=spec["depth"], num_heads=spec["num_heads"], num_classes=num_classes,
                                         qkv_bias=True)


def _measure(kind: str, args: Dict[str, Any], queue) -> None:
    torch.manual_seed(0)
    device, batch, steps = args["device"], args["batch"], args["steps"]
    model = _build(kind, args["geometry"], 702).to(device)
    views = 3 if kind == "lfem_vit" else 1
    h, w = args["geometry"]["img_size"]
    if kind == "timm_vit":
        h, w = model.patch_embed.img_size
    x = torch.randn(views, batch, 3, h, w, device=device)
    pids = torch.arange(batch, device=device) % 16
    cams = torch.arange(batch, device=device) % 8
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)

    def train_step():
        with amp:
            if kind == "timm_vit":
                loss = torch.nn.functional.cross_entropy(model(x[0]), pids)
            else:
                logits = model.forward_branches(x, cams).logits
                loss = sum(torch.nn.functional.cross_entropy(logit.float(), pids) for logit in logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(fn, n):
        for _ in range(args["warmup"]):
            fn()
        _sync(device)
        start = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(device)
        return (time.perf_counter() - start) / n

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    step_s = timed(train_step, steps)
    out = {"model": kind, "views": views, "batch": batch, "train_step_s": step_s,
           "train_images_per_s": views * batch / step_s,
           "params": sum(p.numel() for p in model.parameters()),
           "peak_memory_mb": (torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda"  # training's peak
                              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if kind == "lfem_vit":  # forward only, in the training step's precision
        with torch.no_grad(), amp:
            batched_fwd = timed(lambda: model.forward_branch_features(x, cams), steps)
            separate_fwd = timed(lambda: [model.forward_branch_features(x[v], cams) for v in range(views)], steps)
        out.update(forward_3views_batched_s=batched_fwd, forward_3views_separate_s=separate_fwd)
    model.eval()
    with torch.no_grad(), amp:
        infer_s = timed(lambda: model(x[0]), steps)
    out["inference_images_per_s"] = batch / infer_s
    queue.put(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--smoke", action="store_true", help="a few tiny steps, for tests")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    gpu = args.device == "cuda"
    geometry = (dict(arch="vit_base_patch16", img_size=(256, 128), stride=11) if gpu else
                dict(arch="vit_tiny_test", img_size=(128, 64), stride=11))
    settings = dict(device=args.device, geometry=geometry, batch=args.batch or (48 if gpu else 16),
                    steps=args.steps or 20, warmup=5)
    if args.smoke:
        settings.update(geometry=dict(arch="vit_tiny_test", img_size=(64, 32), stride=8), batch=4, steps=1, warmup=1)
    results = {}
    for kind in ("timm_vit", "vit_transreid", "lfem_vit"):
        results[kind] = run_fresh(_measure, (kind, settings), f"bench_throughput {kind}")
        r = results[kind]
        print(f"{kind:>14}: train {r['train_images_per_s']:8.1f} img/s ({r['views']} view(s) x {r['batch']}), "
              f"inference {r['inference_images_per_s']:8.1f} img/s, peak {r['peak_memory_mb']:.0f} MB")
    lfem, plain = results["lfem_vit"], results["timm_vit"]
    ratios = {
        "lfem_step_time_per_image_over_plain_vit": (lfem["train_step_s"] / (3 * lfem["batch"]))
        / (plain["train_step_s"] / plain["batch"]),
        "transreid_step_time_per_image_over_plain_vit": (results["vit_transreid"]["train_step_s"]
                                                         / results["vit_transreid"]["batch"])
        / (plain["train_step_s"] / plain["batch"]),
        "batched_3view_forward_over_3_separate": lfem["forward_3views_batched_s"] / lfem["forward_3views_separate_s"],
    }
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}")
    device_name = torch.cuda.get_device_name(0) if gpu else f"cpu-{platform.machine()}"
    payload = {"device": device_name, "torch": torch.__version__, "settings": settings, "results": results,
               "ratios": ratios, "date": time.strftime("%Y-%m-%d")}
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = "bench_throughput_smoke_" if args.smoke else "bench_throughput_"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{prefix}{device_name}_torch{torch.__version__}.json")
    (args.out / name).write_text(json.dumps(payload, indent=2))
    print(f"written {args.out / name}")


if __name__ == "__main__":
    main()
