"""``lfem-reid doctor``: will this run fit, how long will it take, is it healthy? Measured before a long run.

It builds exactly what ``lfem-reid train`` builds for a config (data manager, model, optimiser, scheduler, engine,
AMP mode), runs real training iterations and a timed evaluation on a subset, and projects the whole run. With
``--synthetic`` it first writes a throwaway dataset shaped like the config's (:mod:`lfem_plugin.tools.synthetic`), so
it runs before the user has the data.

Reference: the paper's recipe (Sec. 4.2: ViT-B/16, 256x128, PK 16x3, three views, 200 epochs).
"""
from __future__ import annotations

import copy
import logging
import os
import resource
import statistics
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from yacs.config import CfgNode

from ..engine.loop import read_summaries
from ..utils.distributed import unwrap as _unwrap
from . import train as T
from .efficiency import distance_to_peak, format_peak

__all__ = ["run_doctor", "format_report"]

_logger = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _time_training(engine, iters: int, warmup: int) -> Dict[str, Any]:
    """``warmup + iters`` real engine steps; per step: total wall time and time waiting for the loader."""
    engine.set_model_mode("train")
    engine.epoch, engine.max_epoch, engine.num_batches = 0, 1, len(engine.train_loader)
    steps, waits, losses, gates = [], [], [], []
    loader = iter(engine.train_loader)
    end = time.perf_counter()
    for engine.batch_idx in range(warmup + iters):
        try:
            data = next(loader)
        except StopIteration:
            loader = iter(engine.train_loader)
            data = next(loader)
        arrived = time.perf_counter()
        summary = read_summaries([engine.forward_backward(data)])[0]  # reads (and waits for) the step
        now = time.perf_counter()
        losses.append(summary["loss"])
        gates.append([v for k, v in sorted(summary.items()) if k.startswith("gate/")])
        if engine.batch_idx >= warmup:
            steps.append(now - end)
            waits.append(arrived - end)
        end = now
    grads = [p.grad for p in engine.model.parameters() if p.grad is not None]
    return {"iter_s": statistics.median(steps), "data_s": statistics.median(waits), "loss_first": losses[0],
            "loss_last": losses[-1], "grads_finite": all(bool(torch.isfinite(g).all()) for g in grads),
            "gate_mean": [round(float(g), 4) for g in np.mean(gates, axis=0)] if gates[0] else [],
            "last_batch": data}


def _fixed_batch(engine, data, steps: int) -> Dict[str, Any]:
    """Train ``steps`` times on one batch at the base learning rate (no warmup): a healthy model's loss falls."""
    for group in engine.optimizer.param_groups:
        group["lr"] = group.get("initial_lr", group["lr"])
    losses = [summary["loss"] for summary in read_summaries([engine.forward_backward(data) for _ in range(steps)])]
    return {"fixed_batch_losses": [round(v, 4) for v in losses], "fixed_batch_loss_falls": losses[-1] < losses[0]}


def _time_eval(engine, dm, max_images: int) -> Dict[str, Any]:
    """Feature extraction of up to ``max_images`` test images (whole batches) through the engine's evaluation path,
    after one untimed batch (set-up and compilation are paid once per run, not per image)."""
    name = next(iter(dm.test_loader))
    loader = dm.test_loader[name]["gallery"]
    batch = loader.batch_size
    count = max(batch, min(max_images, len(loader.dataset)) // batch * batch)  # whole batches: one shape

    def subset(first: int, size: int):
        indices = range(first, min(first + size, len(loader.dataset)))
        return torch.utils.data.DataLoader(torch.utils.data.Subset(loader.dataset, indices), batch_size=batch,
                                           num_workers=loader.num_workers)

    engine.set_model_mode("eval")
    start = time.perf_counter()
    engine._extract(subset(0, batch))  # untimed first batch: CUDA/cuDNN set-up and, with lfem.compile, compilation
    _sync(engine.device)
    first_batch_s = time.perf_counter() - start
    timed = subset(batch, count) if len(loader.dataset) > batch else subset(0, count)  # tiny sets: time it again
    start = time.perf_counter()
    engine._extract(timed)
    _sync(engine.device)
    elapsed = time.perf_counter() - start
    count = len(timed.dataset)
    total = sum(len(split.dataset) for loaders in dm.test_loader.values() for split in loaders.values())
    return {"eval_images": count, "eval_images_per_s": count / elapsed, "eval_first_batch_s": first_batch_s,
            "eval_total_images": total}


def _amp_agreement(engine, data) -> Dict[str, Any]:
    """One training step's loss and gradients (the engine's own :meth:`~lfem_plugin.engine.LFEMEngine.training_step`)
    with bf16 autocast vs fp32, from the same weights and RNG."""
    model = _unwrap(engine.model)
    results = {}
    for mode in ("fp32", "bf16"):
        model.zero_grad(set_to_none=True)
        with torch.random.fork_rng(devices=[engine.device] if engine.device.type == "cuda" else []):
            torch.manual_seed(0)
            with torch.autocast(engine.device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
                loss = engine.training_step(engine.prepare_batch(data)).loss
            loss.backward()
        grad = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
        results[mode] = (loss.item(), grad)
    model.zero_grad(set_to_none=True)
    (l32, g32), (l16, g16) = results["fp32"], results["bf16"]
    return {"amp_loss_rel_diff": abs(l16 - l32) / max(abs(l32), 1e-12),
            "amp_grad_cosine": float(torch.nn.functional.cosine_similarity(g32, g16, dim=0))}


def _num_evaluations(cfg: CfgNode) -> int:
    """Evaluations ``Engine.run`` performs: every ``eval_freq`` epochs from ``start_eval`` (not the last), plus one
    at the end."""
    freq, last = cfg.test.eval_freq, cfg.train.max_epoch
    periodic = sum(1 for e in range(1, last) if freq > 0 and e % freq == 0 and e >= cfg.test.start_eval)
    return periodic + 1


def _warnings(report: Dict[str, Any], device: torch.device) -> List[str]:
    out = []
    if report["data_s"] > 0.2 * report["iter_s"]:
        out.append(f"the data loader is the bottleneck ({report['data_s']:.3f} of {report['iter_s']:.3f} s per "
                   f"iteration waiting for data): raise data.workers")
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2**20
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    if report["peak_mem_mb"] > 0.9 * total:
        out.append(f"peak memory {report['peak_mem_mb']:.0f} MiB exceeds 90% of the device's {total:.0f} MiB: lower "
                   f"train.batch_size or use lfem.amp bf16")
    if not report["grads_finite"]:
        out.append("non-finite gradients after the timed iterations: lower train.lr or set lfem.grad_clip")
    if not report["fixed_batch_loss_falls"]:
        out.append("the loss did not fall when one fixed batch was trained on: check the learning rate and the data")
    if report["gate_mean"] and (min(report["gate_mean"]) > 0.95 or max(report["gate_mean"]) < 0.05):
        out.append(f"LFEM gates saturated at {report['gate_mean']}: the relation no longer selects between groups")
    return out


def run_doctor(cfg: CfgNode, iters: int = 5, warmup: int = 2, fixed_steps: int = 4, eval_images: int = 256,
               amp_check: Optional[bool] = None) -> Dict[str, Any]:
    """Measure the run ``cfg`` describes (see the module docstring); returns the report as a dict."""
    with tempfile.TemporaryDirectory(prefix="lfem-doctor-") as save_dir:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.data.save_dir = save_dir  # nothing of the user's run folder is touched
        cfg.train.save_checkpoints = False
        cfg.freeze()
        models = T.family(cfg)
        if not isinstance(models, T.PluginFamily):
            raise ValueError(f"doctor measures the plugin's models; {cfg.model.name} trains with torchreid's engines")
        T.check_run_config(cfg, models)
        built = T.set_up(cfg, models)  # what `lfem-reid train` builds, through the same function
        dm, engine, model = built.datamanager, built.engine, built.model
        device = engine.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start_state = copy.deepcopy(_unwrap(model).state_dict())
        timing = _time_training(engine, iters, warmup)
        batch = timing.pop("last_batch")
        report: Dict[str, Any] = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()}"
                                                                                       f" threads)",
            "amp": engine.amp, "model": cfg.model.name, "compile": cfg.lfem.compile,
            "batch_images": cfg.train.batch_size * engine.num_views, **timing,
            "images_per_s": cfg.train.batch_size * engine.num_views / timing["iter_s"],
            "peak_mem_mb": _peak_mem_mb(device), "iters_per_epoch": len(dm.train_loader)}
        report.update(_fixed_batch(engine, batch, fixed_steps))
        report.update(_time_eval(engine, dm, eval_images))
        report.update(distance_to_peak(engine, batch, report))
        report["projected_epoch_s"] = report["iters_per_epoch"] * report["iter_s"]
        report["evaluations"] = _num_evaluations(cfg)
        eval_s = report["eval_total_images"] / report["eval_images_per_s"]
        report["projected_total_h"] = (cfg.train.max_epoch * report["projected_epoch_s"]
                                       + report["evaluations"] * eval_s) / 3600
        if amp_check if amp_check is not None else engine.amp != "off":
            _unwrap(model).load_state_dict(start_state)
            report.update(_amp_agreement(engine, batch))
        report["warnings"] = _warnings(report, device)
        report.update(torch=torch.__version__, max_epoch=cfg.train.max_epoch, date=time.strftime("%Y-%m-%d"))
    return report


def format_report(report: Dict[str, Any]) -> str:
    """A short human summary of :func:`run_doctor`'s report."""
    lines = [f"device {report['device']}, amp {report['amp']}, {report['batch_images']} images per step "
             f"(model {report['model']})",
             f"train: {report['iter_s']:.3f} s/iter ({report['data_s']:.3f} s waiting for data), "
             f"{report['images_per_s']:.1f} images/s, peak memory {report['peak_mem_mb']:.0f} MiB",
             f"epoch: {report['iters_per_epoch']} iterations, {report['projected_epoch_s'] / 60:.1f} min; whole run "
             f"({report['max_epoch']} epochs + {report['evaluations']} evaluations): "
             f"{report['projected_total_h']:.2f} h",
             f"evaluation: {report['eval_images_per_s']:.1f} images/s ({report['eval_total_images']} test images)",
             f"health: loss {report['loss_first']:.3f} -> {report['loss_last']:.3f}, gradients "
             f"{'finite' if report['grads_finite'] else 'NOT finite'}, fixed-batch loss "
             f"{' -> '.join(f'{v:.3f}' for v in report['fixed_batch_losses'])} "
             f"({'falls' if report['fixed_batch_loss_falls'] else 'does NOT fall'}), LFEM gates {report['gate_mean']}"]
    lines.append(format_peak(report))
    if "amp_grad_cosine" in report:
        lines.append(f"bf16 vs fp32, one step: loss rel. diff {report['amp_loss_rel_diff']:.2e}, gradient cosine "
                     f"{report['amp_grad_cosine']:.5f}")
    lines += [f"warning: {w}" for w in report["warnings"]] or ["no warnings"]
    return "\n".join(lines)

