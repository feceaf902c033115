"""``lfem-reid doctor``: will this run fit, how long will it take, is it healthy? Measured before a long run.

It builds exactly what ``lfem-reid train`` builds for a config (data manager, model, optimiser, scheduler, engine,
AMP mode), runs real training iterations and a timed evaluation on a subset, and projects the whole run. With
``synthetic=True`` it first writes a throwaway dataset shaped like the config's (same image, identity and camera
counts; a few generated images hard-linked many times), so it runs before the user has the data.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from PIL import Image
from yacs.config import CfgNode

from . import train as T
from .data.datasets import DUKE_SPLITS, OccludedDuke
from .data.occluded_benchmarks import OccludedREID, PartialILIDS, PartialREID, PDukeMTMCReID
from .data.occluders import split_views
from .distributed import unwrap as _unwrap
from .preflight import TORCHREID_LAYOUTS

__all__ = ["DatasetShape", "SHAPES", "write_synthetic", "synthetic_config", "run_doctor", "format_report"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetShape:
    """Image / identity counts of a dataset's splits and the file layout its loader reads.

    ``layout``: ``'duke'`` (``NNNN_cC_fXXXXXXX.jpg`` in each split folder: Occluded-Duke, DukeMTMC-reID, Market-1501),
    ``'pid_folder'`` (``<pid>/<pid>_NN.jpg``: Occluded-REID, P-DukeMTMC-reID), ``'flat'`` (``<pid>_NN.jpg``:
    Partial-REID, Partial-iLIDS) or ``'msmt'`` (``<pid>/<pid>_NNN_CC_..jpg`` plus MSMT17's ``list_<split>.txt``).
    """

    folder: str
    splits: Dict[str, str]  # split -> sub-folder (P-DukeMTMC-reID's train has two: train, train_whole)
    counts: Dict[str, tuple]  # split -> (images, identities)
    cameras: int
    image_size: tuple = (256, 128)  # person-crop sized (height, width)
    layout: str = "duke"
    first_pid: tuple = (0, 2000, 2000)  # first identity of train, query, gallery (Market-1501 allows 0..1501)


def _test_only_shape(cls, layout: str) -> DatasetShape:
    """A test-only benchmark's shape from its loader: the folders as distributed and the benchmark's counts."""
    names = cls.layout
    return DatasetShape(names.dataset_dirs[0], {"query": names.query_dirs[0], "gallery": names.gallery_dirs[0]},
                        cls.counts, 2, layout=layout)


_PDUKE = PDukeMTMCReID.layout
# Counts: Occluded-Duke as built by `lfem-reid prepare`; Market-1501, DukeMTMC-reID and MSMT17 as torchreid loads
# them; Occluded-REID, Partial-REID, Partial-iLIDS as published (their loaders' counts); P-DukeMTMC-reID as published
# by PVPM (Gao et al., CVPR 2020: 12,927 train images of 665 ids, split evenly here between its occluded and
# whole-body folders; not checked against a copy). Only the totals matter: they set the projected epoch and
# evaluation times. Folder names come from the loaders' layouts.
SHAPES: Dict[str, DatasetShape] = {
    "occluded_duke": DatasetShape(OccludedDuke.dataset_dir, DUKE_SPLITS,
                                  {"train": (15618, 702), "query": (2210, 519), "gallery": (17661, 1110)}, 8),
    "dukemtmcreid": DatasetShape(TORCHREID_LAYOUTS["dukemtmcreid"][1][0], DUKE_SPLITS,
                                 {"train": (16522, 702), "query": (2228, 702), "gallery": (17661, 1110)}, 8),
    "market1501": DatasetShape(TORCHREID_LAYOUTS["market1501"][1][0], DUKE_SPLITS,
                               {"train": (12936, 751), "query": (3368, 750), "gallery": (15913, 751)}, 6,
                               first_pid=(1, 752, 751)),
    "msmt17": DatasetShape(TORCHREID_LAYOUTS["msmt17"][1][0], {"train": "train", "query": "test", "gallery": "test"},
                           {"train": (32621, 1041), "query": (11659, 3060), "gallery": (82161, 3060)}, 15,
                           layout="msmt"),
    "occluded_reid": _test_only_shape(OccludedREID, "pid_folder"),
    "partial_reid": _test_only_shape(PartialREID, "flat"),
    "partial_ilids": _test_only_shape(PartialILIDS, "flat"),
    "p_dukemtmc_reid": DatasetShape(_PDUKE.dataset_dirs[0], {"train": f"train/{_PDUKE.query_dirs[0]}",
                                                             "train_whole": f"train/{_PDUKE.gallery_dirs[0]}",
                                                             "query": f"test/{_PDUKE.query_dirs[0]}",
                                                             "gallery": f"test/{_PDUKE.gallery_dirs[0]}"},
                                    {"train": (6464, 665), "train_whole": (6463, 665), "query": (2163, 634),
                                     "gallery": (9053, 634)}, 2, layout="pid_folder"),
}


def _items(split: str, images: int, ids: int, cameras: int, first_pid: int) -> List[tuple]:
    """``(pid, camera, index)`` of every image: spread over ``ids`` identities, cameras (1-based) cycling so each
    identity spans several and a query's camera differs from its gallery images' first one."""
    per_id = np.full(ids, images // ids)
    per_id[:images % ids] += 1
    items = []
    for k, count in enumerate(per_id):
        for i in range(count):
            items.append((first_pid + k, (k + i + (1 if split == "query" else 0)) % cameras + 1, len(items)))
    return items


def _file_name(layout: str, pid: int, camera: int, index: int, split: str) -> str:
    if layout == "duke":
        return f"{pid:04d}_c{camera}_f{index:07d}.jpg"
    if layout == "pid_folder":
        return f"{pid:04d}/{pid:04d}_{index:05d}.jpg"
    if layout == "flat":
        return f"{pid:04d}_{index:05d}.jpg"
    # MSMT17: query and gallery share test/, so the split goes into the name's time field
    return f"{pid:04d}/{pid:04d}_{index:03d}_{camera:02d}_0303{split}_{index:04d}_0.jpg"


def write_synthetic(name: str, root: str | os.PathLike, num_distinct: int = 8, seed: int = 0) -> Path:
    """Write a dataset shaped like ``name`` under ``root`` (hard links to ``num_distinct`` generated images)."""
    if name not in SHAPES:
        raise KeyError(f"no synthetic shape for dataset {name!r}; known: {sorted(SHAPES)} (or run without "
                       f"--synthetic on the real data)")
    shape = SHAPES[name]
    base = Path(root) / shape.folder
    rng = np.random.default_rng(seed)
    sources = []
    for i in range(num_distinct):
        pixels = rng.integers(0, 256, size=(*shape.image_size, 3), dtype=np.uint8)
        sources.append(base / f".source{i}.jpg")
        sources[-1].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(sources[-1], quality=90)
    # query identities are the first gallery identities (the rest are distractors); train identities are disjoint
    for split, sub in shape.splits.items():
        first = shape.first_pid[0 if split.startswith("train") else 1 if split == "query" else 2]
        names = [_file_name(shape.layout, pid, cam, i, split)
                 for pid, cam, i in _items(split, *shape.counts[split], shape.cameras, first)]
        for i, file_name in enumerate(names):
            (base / sub / file_name).parent.mkdir(parents=True, exist_ok=True)
            os.link(sources[i % num_distinct], base / sub / file_name)
        if shape.layout == "msmt":  # MSMT17 reads its splits from list files: "<path under the split dir> <pid>"
            listed = [f"{n} {n.split('/')[0].lstrip('0') or '0'}\n" for n in names]
            (base / f"list_{split}.txt").write_text("".join(listed))
            (base / "list_val.txt").touch()
    return base


def synthetic_config(cfg: CfgNode, root: str) -> CfgNode:
    """``cfg`` with every source and target dataset written synthetically under ``root``."""
    for name in dict.fromkeys(list(cfg.data.sources) + list(cfg.data.targets)):
        write_synthetic(name, root)
    out = cfg.clone()
    out.defrost()
    out.data.root = root
    out.freeze()
    return out


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
        summary = engine.forward_backward(data)
        _sync(engine.device)
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
    losses = [engine.forward_backward(data)["loss"] for _ in range(steps)]
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
    """One training step's loss and gradients with bf16 autocast vs fp32, from the same weights and RNG."""
    model = _unwrap(engine.model)
    images = torch.stack([v.to(engine.device) for v in split_views(data["img"])[0]])
    pids, cameras = data["pid"].to(engine.device), data["camid"].to(engine.device)
    results = {}
    for mode in ("fp32", "bf16"):
        model.zero_grad(set_to_none=True)
        with torch.random.fork_rng(devices=[engine.device] if engine.device.type == "cuda" else []):
            torch.manual_seed(0)
            with torch.autocast(engine.device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
                out = model(images, camera=cameras, branch_features=True)
                loss, _ = engine.criterion(model.classify(out.names, out.features), out.features, pids, out.names)
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
        if not T.is_plugin_model(cfg.model.name):
            raise ValueError(f"doctor measures the plugin's models; {cfg.model.name} trains with torchreid's engines")
        T.preflight.check_config(cfg)
        T.set_seed(cfg.train.seed)
        dm = T.build_datamanager(cfg)
        T.preflight.check_data(cfg, dm, T.sie_cameras(cfg, dm))
        engine, model = T.build_engine(cfg, dm)
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
    if "amp_grad_cosine" in report:
        lines.append(f"bf16 vs fp32, one step: loss rel. diff {report['amp_loss_rel_diff']:.2e}, gradient cosine "
                     f"{report['amp_grad_cosine']:.5f}")
    lines += [f"warning: {w}" for w in report["warnings"]] or ["no warnings"]
    return "\n".join(lines)
