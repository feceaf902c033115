"""Checks run before the first training step, so a long run never fails on something knowable at the start.

:func:`check_config` needs only the config (sampler arithmetic, epochs, metric names); :func:`check_data` needs
the built data manager (test images readable, every query identity in the gallery, test cameras known to SIE,
enough identities for one batch). Errors say what is wrong, where, and how to fix it.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from PIL import Image
from yacs.config import CfgNode

from ..config import check_choices, target_sie
from ..data.datasets import DUKE_SPLITS
from ..data.occluded_benchmarks import TEST_ONLY

__all__ = ["check_config", "check_data", "check_sampler", "check_test_images", "check_query_matches",
           "check_test_cameras", "check_torchreid_datasets", "download_failed", "check_rerank_memory", "PreflightError",
           "check_batch_norm",
           "TORCHREID_LAYOUTS"]

_logger = logging.getLogger(__name__)
Item = Tuple  # (path, pid, camid, ...)


class PreflightError(ValueError):
    """A setting or the data makes the run fail later; raised before training starts."""


def check_config(cfg: CfgNode) -> None:
    """Settings that are wrong whatever the data."""
    if not cfg.test.evaluate and cfg.train.max_epoch < 1:
        raise PreflightError(f"train.max_epoch is {cfg.train.max_epoch}; it must be at least 1")
    if cfg.data.type != "image":
        raise PreflightError(f"data.type {cfg.data.type!r}: only image datasets are supported (torchreid's video "
                             f"datasets are not); use data.type image")
    try:  # a config not built by load_config (which checks them with where each was set)
        check_choices(cfg)
    except ValueError as err:
        raise PreflightError(str(err)) from None
    test_only = [name for name in cfg.data.sources if name in TEST_ONLY]
    if test_only:
        raise PreflightError(f"data.sources lists {', '.join(test_only)}, a test-only benchmark (no training split); "
                             f"move it to data.targets and train on another dataset (by convention market1501, "
                             f"e.g. configs/market1501/)")
    for key, value in (("train.batch_size", cfg.train.batch_size), ("test.batch_size", cfg.test.batch_size),
                       ("sampler.num_instances", cfg.sampler.num_instances)):
        if value < 1:
            raise PreflightError(f"{key} is {value}; it must be at least 1")
    if cfg.train.checkpoint_period < 0:
        raise PreflightError(f"train.checkpoint_period is {cfg.train.checkpoint_period}; use 0 (only at evaluations "
                             f"and the end) or a positive number of epochs")
    if cfg.sampler.train_sampler == "RandomIdentitySampler":
        batch, k = cfg.train.batch_size, cfg.sampler.num_instances
        if batch % k:
            lower, upper = batch - batch % k, batch - batch % k + k
            raise PreflightError(f"train.batch_size {batch} is not a multiple of sampler.num_instances {k} (P "
                                 f"identities x K images); use {lower or upper} or {upper}")
        if batch // k == 1:
            _logger.warning("train.batch_size %d / sampler.num_instances %d = one identity per batch: every triplet "
                            "term is 0 (no negatives); raise train.batch_size", batch, k)


def check_sampler(num_pids: int, batch_size: int, num_instances: int, sources: Sequence[str]) -> None:
    """The P x K sampler needs at least P = batch_size / num_instances training identities."""
    needed = batch_size // num_instances
    if num_pids < needed:
        raise PreflightError(f"train.batch_size {batch_size} / sampler.num_instances {num_instances} = {needed} "
                             f"identities per batch, but the training set ({', '.join(sources)}) has {num_pids}; "
                             f"lower train.batch_size to at most {num_pids * num_instances}")


# torchreid's own datasets that the shipped configs use: title, the folders under data.root its loader reads (any
# one), and the entries that folder must hold.
_SPLITS = tuple(DUKE_SPLITS.values())
TORCHREID_LAYOUTS: Dict[str, Tuple[str, Tuple[str, ...], Tuple[str, ...]]] = {
    "market1501": ("Market-1501", ("market1501/Market-1501-v15.09.15", "market1501"), _SPLITS),
    "dukemtmcreid": ("DukeMTMC-reID", ("dukemtmc-reid/DukeMTMC-reID",), _SPLITS),
    "msmt17": ("MSMT17", ("msmt17/MSMT17_V1", "msmt17/MSMT17_V2"),
               ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")),
}


def _expected(name: str) -> str:
    title, folders, entries = TORCHREID_LAYOUTS[name]
    return f"{title} ({name}): torchreid reads {folders[0]}/{{{', '.join(entries)}}} under data.root"


def _present(root: str, name: str) -> bool:
    _, folders, entries = TORCHREID_LAYOUTS[name]
    base = Path(root).expanduser()
    return any(all((base / folder / e).exists() for e in entries) for folder in folders)


def _top(root: str, name: str) -> Path:
    return Path(root).expanduser() / TORCHREID_LAYOUTS[name][1][0].split("/")[0]


def check_torchreid_datasets(root: str, names: Sequence[str]) -> List[str]:
    """torchreid's own datasets among ``names`` (:data:`TORCHREID_LAYOUTS`): an incomplete copy is an error naming
    what its loader reads (torchreid would fail later on a bare path); returns those whose top folder is missing
    altogether, which torchreid then tries to download."""
    missing = []
    for name in dict.fromkeys(n for n in names if n in TORCHREID_LAYOUTS):
        top = _top(root, name)
        if not top.exists():
            missing.append(name)
        elif not _present(root, name):
            found = sorted(p.name for p in top.iterdir())[:8] if top.is_dir() else []
            raise PreflightError(f"{_expected(name)} {root}, but {top} holds {found or 'nothing'}; unpack the dataset "
                                 f"there, or delete {top} to let torchreid try its own download")
    return missing


def download_failed(root: str, missing: Sequence[str], err: Exception):
    """The error for a failed torchreid download of the datasets in ``missing`` still absent (None when all arrived:
    ``err`` came from elsewhere). The empty folders torchreid created are removed, so the next run tries again
    instead of failing on them."""
    absent = [name for name in missing if not _present(root, name)]
    if not absent:
        return None
    for top in (_top(root, name) for name in absent):
        if top.is_dir() and not any(p.is_file() and p.stat().st_size for p in top.rglob("*")):
            for child in sorted(top.rglob("*"), reverse=True):
                child.unlink() if child.is_file() else child.rmdir()
            top.rmdir()
    wanted = "; ".join(f"{_expected(name)} {root}" for name in absent)
    return PreflightError(f"{' '.join(str(err).split())}: torchreid could not download it ({wanted}). Download the "
                          f"dataset yourself and unpack it there")


def _header_ok(path: str) -> bool:
    try:
        with Image.open(path) as img:
            img.size  # noqa: B018 - the header is parsed on open; size proves it
        return True
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def check_test_images(name: str, split: str, items: List[Item], skip_bad_images: bool) -> None:
    """Every query/gallery file opens (header only: fast); bad ones are dropped in place when skipping."""
    bad = [item for item in items if not _header_ok(item[0])]
    if not bad:
        return
    if not skip_bad_images:
        shown = ", ".join(str(item[0]) for item in bad[:3])
        raise PreflightError(f"{name} {split}: {len(bad)} of {len(items)} images cannot be read ({shown}"
                             f"{', ...' if len(bad) > 3 else ''}); replace them, or drop them with "
                             f"data.skip_bad_images True")
    bad_paths = {item[0] for item in bad}
    items[:] = [item for item in items if item[0] not in bad_paths]
    _logger.warning("%s %s: skipped %d unreadable image(s) of %d", name, split, len(bad), len(items) + len(bad))


def check_query_matches(name: str, query: List[Item], gallery: List[Item]) -> None:
    """Each query needs a gallery image of its identity from another camera (the Market/Duke protocol drops
    same-camera matches); queries without one are left out of the metrics, a set with none cannot be scored."""
    cams_of: Dict[int, set] = defaultdict(set)
    for item in gallery:
        cams_of[int(item[1])].add(int(item[2]))
    valid = sum(bool(cams_of.get(int(q[1]), set()) - {int(q[2])}) for q in query)
    if valid == 0:
        raise PreflightError(f"{name}: no query identity has a gallery image from another camera, so rank-1/mAP "
                             f"cannot be computed; check the dataset's query/gallery split and camera ids")
    if valid < len(query):
        _logger.warning("%s: %d of %d queries have no gallery match from another camera; they are left out of the "
                        "metrics", name, len(query) - valid, len(query))


def check_test_cameras(name: str, items: List[Item], train_cameras: Sequence[int]) -> None:
    """With SIE and ``test.use_cameras``, every test camera must have an SIE row (a training camera)."""
    unseen = sorted({int(item[2]) for item in items} - set(int(c) for c in train_cameras))
    if unseen:
        raise PreflightError(f"{name}: test camera ids {unseen} never occur in training (training cameras "
                             f"{sorted(set(train_cameras))}), so camera SIE has no embedding for them; set "
                             f"test.use_cameras False (SIE off at evaluation), test.cross_domain_sie mean (if "
                             f"{name} is not a source) or lfem.use_sie False")


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not a POSIX system: nothing to compare with
        return 0


def check_rerank_memory(name: str, num_query: int, num_gallery: int, memory: int = 0) -> None:
    """Re-ranking reads query-gallery, query-query and gallery-gallery distances (float32, in host memory); a
    target whose three matrices exceed the machine's memory would fail at the first evaluation, after training."""
    memory = memory or _physical_memory()
    need = 4 * (num_query * num_gallery + num_query ** 2 + num_gallery ** 2)
    if memory and need > memory:
        raise PreflightError(f"{name}: test.rerank needs at least {need / 2**30:.1f} GB for its distance matrices "
                             f"({num_query} queries, {num_gallery} gallery images), more than this machine's "
                             f"{memory / 2**30:.1f} GB; set test.rerank False (re-rank offline on a larger machine)")


def check_batch_norm(model, batch_size: int, world_size: int = 1) -> None:
    """Each training step gives every BatchNorm layer this process's batch (``batch_size // world_size``; the train
    loaders drop a last partial batch, and the plugin's heads see one view each). A one-sample batch cannot be
    normalised where a channel holds one value (BatchNorm1d: the BNNeck and torchreid's embedding heads); torch
    would stop at the first step with "Expected more than 1 value per channel".

    Raises:
        PreflightError: naming the layers, the batch and the keys to change.
    """
    import torch
    per_process = batch_size // max(world_size, 1)
    if per_process >= 2:
        return
    kinds = (torch.nn.BatchNorm1d, torch.nn.SyncBatchNorm)
    layers = [name for name, module in model.named_modules() if isinstance(module, kinds)]
    if not layers:
        return
    shared = f" shared by {world_size} processes" if world_size > 1 else ""
    raise PreflightError(f"train.batch_size {batch_size}{shared} gives {per_process} sample(s) per step to each of "
                         f"the model's {len(layers)} BatchNorm layers (e.g. {', '.join(layers[:2])}), which cannot "
                         f"normalise one sample; use train.batch_size {2 * max(world_size, 1)} or more (a multiple "
                         f"of sampler.num_instances)")


def check_data(cfg: CfgNode, dm, sie_cameras: Sequence[int] = ()) -> None:
    """Checks on the built data manager: test images, query/gallery matches, test cameras known to SIE (for the
    targets whose own camera ids reach it, :func:`~lfem_plugin.config.target_sie`)."""
    modes = target_sie(cfg)
    for name, splits in dm.test_dataset.items():
        for split in ("query", "gallery"):
            check_test_images(name, split, splits[split], cfg.data.skip_bad_images)
        check_query_matches(name, splits["query"], splits["gallery"])
        if cfg.test.rerank:
            check_rerank_memory(name, len(splits["query"]), len(splits["gallery"]))
        if sie_cameras and modes.get(name) == "cameras":
            check_test_cameras(name, splits["query"] + splits["gallery"], sie_cameras)
