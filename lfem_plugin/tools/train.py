"""Build the data manager, model, optimiser, scheduler and engine from a config (:func:`set_up`: each part once per
run), then train or test.

Mirrors the shape of torchreid's ``scripts/main.py`` (which PyPI torchreid does not ship).
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np
import torch
from yacs.config import CfgNode

from .. import config as C
from ..data.datamanager import ReIDDataManager
from ..engine import LFEMEngine
from ..utils import distributed as D
from ..utils.checkpoint import (list_checkpoints, load_checkpoint, load_state_strict, load_trained_weights,
                                remove_orphan_tmp, trained_size)
from ..utils.distributed import unwrap as _unwrap
from ..utils.run_lock import RunLock
from . import preflight
from .families import Family, PluginFamily, TorchreidFamily, family, is_plugin_model, register_family  # noqa: F401

__all__ = ["build_datamanager", "build_model", "build_engine", "set_seed", "set_up", "Setup", "family",
           "register_family", "PluginFamily", "TorchreidFamily", "check_run_config", "resolve_resume", "run"]

_logger = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


@dataclass
class Setup:
    """What one run builds from a config, each part once: the model family, the data manager, the raw camera ids
    of the training set (one SIE row each), the engine and the model on its device.

    Reference: torchreid ``scripts/main.py`` (datamanager, model, optimizer, engine built in turn); fast-reid
    ``DefaultTrainer`` (build_model / build_train_loader / build_optimizer once per run).
    """

    family: Family
    datamanager: Any
    cameras: List[int]
    engine: Any
    model: torch.nn.Module


def set_up(cfg: CfgNode, models: Optional[Family] = None) -> Setup:
    """Seed, data manager, data checks, model and engine for ``cfg``: what training, testing and ``doctor`` run.
    ``models``: the run's :func:`family` (asked here when not given)."""
    set_seed(cfg.train.seed)
    os.makedirs(cfg.data.save_dir, exist_ok=True)
    models = models or family(cfg)
    dm = build_datamanager(cfg, models)
    cameras = train_cameras(dm)
    preflight.check_data(cfg, dm, models.sie_cameras(cfg, cameras))
    engine, model = build_engine(cfg, dm, models, cameras)
    if not cfg.test.evaluate:
        preflight.check_batch_norm(_unwrap(model), cfg.train.batch_size, D.world_size())
    return Setup(models, dm, cameras, engine, model)


def build_datamanager(cfg: CfgNode, models: Optional[Family] = None) -> ReIDDataManager:
    """torchreid's ``ImageDataManager`` for ``cfg``: plugin models get the multi-view train transform (and the
    matching test transform), torchreid's models its own flip; under ``torchrun`` each rank loads its share.
    ``models``: the run's :func:`family` (asked here when not given)."""
    kwargs = (models or family(cfg)).datamanager_kwargs(cfg)
    parts = dict(skip_bad_images=cfg.data.skip_bad_images, market_layout=C.market_layout_kwargs(cfg),
                 loader=C.loader_kwargs(cfg),
                 distributed=C.distributed_loader_kwargs(cfg) if D.is_distributed() else None)
    missing = preflight.check_torchreid_datasets(kwargs["root"], kwargs["sources"] + kwargs["targets"])
    try:
        return ReIDDataManager(**kwargs, **parts)
    except (OSError, RuntimeError) as err:  # torchreid's download of a missing dataset (or its refusal to try)
        failed = preflight.download_failed(kwargs["root"], missing, err)
        if failed is None:
            raise
        raise failed from None
    except AssertionError:  # torchreid's sampler asserts there are enough identities for one P x K batch
        plain = dict(parts, distributed=None)  # a RandomSampler, not this rank's P x K share (it would refuse first)
        num_pids = ReIDDataManager(**dict(kwargs, train_sampler="RandomSampler"), **plain).num_train_pids
        preflight.check_sampler(num_pids, cfg.train.batch_size, cfg.sampler.num_instances, cfg.data.sources)
        raise


def train_cameras(dm) -> List[int]:
    """The raw camera ids of the training set (one SIE row each, in sorted order)."""
    return sorted({int(item[2]) for item in dm.train_loader.dataset.train})


def build_model(cfg: CfgNode, num_classes: int, num_cameras: int, camera_ids=None,
                models: Optional[Family] = None) -> torch.nn.Module:
    """The configured model; ``model.load_weights`` (trained weights, torchreid's meaning) is loaded into it."""
    model = (models or family(cfg)).build_model(cfg, num_classes, num_cameras, camera_ids)
    if cfg.model.load_weights:
        load_trained_weights(model, cfg.model.load_weights)
    return model


def build_engine(cfg: CfgNode, dm, models: Optional[Family] = None,
                 cameras: Optional[List[int]] = None) -> Tuple[object, torch.nn.Module]:
    """The engine for ``cfg.model.name`` (:class:`LFEMEngine` for plugin models, torchreid's otherwise) and the
    model on this process's device. ``models``, ``cameras``: the run's :func:`family` and :func:`train_cameras`
    (found here when not given)."""
    models = models or family(cfg)
    cameras = train_cameras(dm) if cameras is None else cameras
    use_gpu = D.use_cuda(cfg.use_gpu)
    model = build_model(cfg, dm.num_train_pids, dm.num_train_cams, cameras, models)
    return models.build_engine(cfg, dm, model.to(D.local_device(use_gpu)), use_gpu)


def resolve_resume(model_dir: str, resume: str, max_epoch: int) -> Tuple[str, int]:
    """The checkpoint to resume from (``''``: from scratch) and its epoch.

    ``'auto'`` takes the newest checkpoint in ``model_dir``. Resuming from an older checkpoint than the newest in
    ``model_dir`` is refused: continuing would overwrite the newer ones.
    """
    found = list_checkpoints(model_dir)
    if resume == "auto":
        if not found:
            _logger.info("--resume auto: no checkpoint in %s, starting from scratch", model_dir)
            return "", 0
        resume = str(found[-1][1])
    if not resume:
        return "", 0
    epoch = int(load_checkpoint(resume)["epoch"])
    newer = [path.name for e, path in found if e > epoch]
    if newer and epoch < max_epoch:
        raise FileExistsError(f"{resume} is from epoch {epoch}, but {model_dir} already holds later checkpoints "
                              f"({', '.join(newer[-3:])}) that continuing would overwrite; resume from the newest "
                              f"(--resume auto) or set another data.save_dir")
    return resume, epoch


def check_run_config(cfg: CfgNode, models: Optional[Family] = None) -> None:
    """The checks of a config before any work: the core's (:func:`~lfem_plugin.tools.preflight.check_config`) and
    its family's own keys (``models``: the run's :func:`family`, asked here when not given)."""
    preflight.check_config(cfg)
    (models or family(cfg)).check_config(cfg)


def run(cfg: CfgNode, resume: str = "", weights: str = "") -> Optional[LFEMEngine]:
    """Train (or test, with ``test.evaluate``) as configured; returns the engine (results in ``last_results``), or
    None when the checkpoint to resume from already finished the run (nothing is written then). ``weights``: a
    checkpoint loaded strictly into the model before the run (``lfem-reid test``; a mismatch names the keys).

    Everything checkable is checked before the first step (:mod:`lfem_plugin.tools.preflight`); one training at a time
    may use ``data.save_dir`` (:class:`~lfem_plugin.utils.run_lock.RunLock`). Under ``torchrun`` (``WORLD_SIZE > 1``) it
    trains with DistributedDataParallel: one process per GPU (gloo on CPU), each loading whole identities of every
    global batch; rank 0 logs, evaluates and checkpoints.
    """
    models = family(cfg)
    check_run_config(cfg, models)
    model_dir = os.path.join(cfg.data.save_dir, "model")
    D.init_from_env()
    lock = RunLock(cfg.data.save_dir) if D.is_main() and not cfg.test.evaluate else None
    try:
        if lock is not None:
            lock.acquire()
            remove_orphan_tmp(model_dir)
        resume, start_epoch = ("", 0) if cfg.test.evaluate else resolve_resume(model_dir, resume, cfg.train.max_epoch)
        if resume and start_epoch >= cfg.train.max_epoch:
            _logger.info("%s already finished the run (epoch %d of train.max_epoch %d): nothing to do", resume,
                         start_epoch, cfg.train.max_epoch)
            engine = None
        else:
            engine = _train(cfg, resume, weights, models)
    finally:
        if lock is not None:
            lock.release()
    D.shutdown()  # on success only: after an error on one rank a barrier would wait forever
    return engine


def _train(cfg: CfgNode, resume: str, weights: str = "", models: Optional[Family] = None) -> LFEMEngine:
    built = set_up(cfg, models)
    engine, model = built.engine, built.model
    if weights:
        state = load_checkpoint(weights)
        load_state_strict(_unwrap(model), state.get("state_dict", state), weights, f"model {cfg.model.name}",
                          trained_size(state))
    kwargs = C.engine_run_kwargs(cfg)
    if resume:
        kwargs["start_epoch"] = engine.resume(resume)
    engine.run(**kwargs)
    return engine
