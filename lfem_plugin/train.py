"""Build the data manager, model, optimiser, scheduler and engine from a config, then train or test.

Mirrors the shape of torchreid's ``scripts/main.py`` (which PyPI torchreid does not ship).
"""
from __future__ import annotations

import logging
import os
import random
from typing import Optional, Tuple

import numpy as np
import torch
from yacs.config import CfgNode

from . import _torchreid, config as C
from . import distributed as D
from . import preflight
from .checkpoint import (list_checkpoints, load_checkpoint, load_state_strict, load_trained_weights,
                         remove_orphan_tmp)
from .data.datasets import set_skip_bad_images
from .data.sampler import DistributedIdentitySampler
from .data.transforms import build_test_transform, build_train_transform
from .distributed import unwrap as _unwrap
from .engine import LFEMEngine, TorchreidSoftmaxEngine, TorchreidTripletEngine
from .losses import MultiBranchLoss, branch_weights
from .models.visibility import TokenGeometry
from .optim import WarmupCosineLR, build_optimizer
from .registry import MODELS
from .run_lock import RunLock

__all__ = ["build_datamanager", "build_model", "build_engine", "set_seed", "resolve_resume", "run"]

_logger = logging.getLogger(__name__)
_TR = _torchreid.root()


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def is_plugin_model(name: str) -> bool:
    return name in MODELS


class TorchreidFamily:
    """torchreid's own models: torchreid's transforms (flip), model factory, optimiser and engines - the latter
    with the plugin's evaluation and checkpoints, so a comparison scores and saves every model the same way."""

    train_transforms = ["random_flip"]  # torchreid's own, with the configured normalisation

    def adapt_datamanager(self, cfg: CfgNode, dm) -> None:
        pass

    def sie_cameras(self, cfg: CfgNode, dm) -> list:
        return []

    def build_model(self, cfg: CfgNode, num_classes: int, num_cameras: int, camera_ids=None) -> torch.nn.Module:
        return _TR.models.build_model(cfg.model.name, num_classes=num_classes, **C.build_model_kwargs(cfg))

    def build_engine(self, cfg: CfgNode, dm, model: torch.nn.Module, use_gpu: bool):
        optimizer = _TR.optim.build_optimizer(model, **C.torchreid_optimizer_kwargs(cfg))
        scheduler = WarmupCosineLR(optimizer, **C.scheduler_kwargs(cfg))
        kwargs = dict(scheduler=scheduler, use_gpu=use_gpu, **C.torchreid_engine_kwargs(cfg))
        engine = TorchreidSoftmaxEngine if cfg.loss.name == "softmax" else TorchreidTripletEngine
        return engine(dm, model, optimizer, **kwargs), model


class PluginFamily:
    """The plugin's models: multi-view train transform, camera SIE sized to the training cameras, the
    TransReID optimiser groups, the seven-branch criterion, AMP / compile / DDP, and :class:`LFEMEngine`."""

    train_transforms = None  # torchreid builds none; adapt_datamanager puts the multi-view transform in

    def adapt_datamanager(self, cfg: CfgNode, dm, geometry: Optional[TokenGeometry] = None) -> None:
        """The multi-view train transform and the test transform; with ``geometry`` (the model's patch grid and
        JPM groups) the train views also give their hidden rectangles and group visibility targets."""
        dm.transform_tr = build_train_transform(**C.transform_kwargs(cfg), geometry=geometry)
        dm.transform_te = build_test_transform(**C.test_transform_kwargs(cfg))
        dm.train_loader.dataset.transform = dm.transform_tr
        for loaders in dm.test_loader.values():
            for loader in loaders.values():
                loader.dataset.transform = dm.transform_te

    def sie_cameras(self, cfg: CfgNode, dm) -> list:
        cameras = train_cameras(dm) if cfg.lfem.use_sie else []
        return cameras if len(cameras) > 1 else []

    def build_model(self, cfg: CfgNode, num_classes: int, num_cameras: int, camera_ids=None) -> torch.nn.Module:
        builder = MODELS.get(cfg.model.name)
        _check_normalisation(cfg, builder)
        return builder(num_classes=num_classes, **C.build_model_kwargs(cfg), **C.model_kwargs(cfg, num_cameras,
                                                                                             camera_ids))

    def build_engine(self, cfg: CfgNode, dm, model: torch.nn.Module, use_gpu: bool):
        if C.visibility_targets(cfg):  # the targets follow the built model's patch grid and JPM grouping
            self.adapt_datamanager(cfg, dm, TokenGeometry.of(model.backbone))
        optimizer = build_optimizer(model, **C.optimizer_kwargs(cfg))
        acceleration = C.acceleration_kwargs(cfg)
        if use_gpu and acceleration["tf32"]:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        if acceleration["compile"]:
            model.compile()  # in place: the state dict keeps its keys, so checkpoints stay interchangeable
        if D.is_distributed():
            # The trunk's last block is not built under JPM, so every parameter is used: no find_unused_parameters.
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()]
                                                              if use_gpu else None)
        scheduler = WarmupCosineLR(optimizer, **C.scheduler_kwargs(cfg))
        names = _unwrap(model).branch_names
        criterion = MultiBranchLoss(names, **C.criterion_kwargs(cfg, branch_weights(names, cfg.lfem.loss_weights)))
        engine = LFEMEngine(dm, model, optimizer, scheduler, criterion, use_gpu=use_gpu, **C.lfem_engine_kwargs(cfg))
        return engine, model


def family(cfg: CfgNode):
    """The one place the two model families part: the plugin's registered models or torchreid's."""
    return PluginFamily() if is_plugin_model(cfg.model.name) else TorchreidFamily()


def build_datamanager(cfg: CfgNode):
    """torchreid's ``ImageDataManager`` for ``cfg``: plugin models get the multi-view train transform (and the
    matching test transform), torchreid's models its own flip; under ``torchrun`` each rank loads its share."""
    set_skip_bad_images(cfg.data.skip_bad_images)
    models = family(cfg)
    kwargs = C.imagedata_kwargs(cfg, models.train_transforms)
    missing = preflight.check_torchreid_datasets(kwargs["root"], kwargs["sources"] + kwargs["targets"])
    try:
        dm = _TR.data.ImageDataManager(**kwargs)
    except (OSError, RuntimeError) as err:  # torchreid's download of a missing dataset (or its refusal to try)
        failed = preflight.download_failed(kwargs["root"], missing, err)
        if failed is None:
            raise
        raise failed from None
    except AssertionError:  # torchreid's sampler asserts there are enough identities for one P x K batch
        num_pids = _TR.data.ImageDataManager(**dict(kwargs, train_sampler="RandomSampler")).num_train_pids
        preflight.check_sampler(num_pids, cfg.train.batch_size, cfg.sampler.num_instances, cfg.data.sources)
        raise
    models.adapt_datamanager(cfg, dm)
    if D.is_distributed():
        dm.train_loader = _distributed_loader(dm.train_loader, **C.distributed_loader_kwargs(cfg))
    return dm


def _distributed_loader(loader, batch_size: int, num_instances: int, seed: int, workers: int, pin_memory: bool,
                        sampler: str):
    """Each rank loads its share (whole identities) of every global P x K batch."""
    if sampler != "RandomIdentitySampler":
        raise ValueError("multi-process training needs sampler.train_sampler RandomIdentitySampler")
    share = DistributedIdentitySampler(loader.dataset.train, batch_size, num_instances, D.rank(), D.world_size(), seed)
    return torch.utils.data.DataLoader(loader.dataset, batch_size=batch_size // D.world_size(), sampler=share,
                                       num_workers=workers, pin_memory=pin_memory, drop_last=True)


def train_cameras(dm) -> list:
    """The raw camera ids of the training set (one SIE row each, in sorted order)."""
    return sorted({int(item[2]) for item in dm.train_loader.dataset.train})


def sie_cameras(cfg: CfgNode, dm) -> list:
    """The training cameras that get SIE rows (none for torchreid models, with SIE off, or one camera)."""
    return family(cfg).sie_cameras(cfg, dm)


def build_model(cfg: CfgNode, num_classes: int, num_cameras: int, camera_ids=None) -> torch.nn.Module:
    """The configured model; ``model.load_weights`` (trained weights, torchreid's meaning) is loaded into it."""
    model = family(cfg).build_model(cfg, num_classes, num_cameras, camera_ids)
    if cfg.model.load_weights:
        load_trained_weights(model, cfg.model.load_weights)
    return model


def _check_normalisation(cfg: CfgNode, builder) -> None:
    """ImageNet weights expect the normalisation they were trained with; say so when the config differs."""
    if not cfg.model.pretrained or not hasattr(builder, "arch"):
        return
    from .models.backbones import backbone_norm
    mean, std = backbone_norm(builder.arch)
    configured = list(cfg.data.norm_mean) + list(cfg.data.norm_std)
    if any(abs(a - b) > 1e-6 for a, b in zip(list(mean) + list(std), configured)):
        _logger.warning("data.norm_mean/norm_std %s/%s differ from the normalisation of %s's ImageNet weights %s/%s; "
                        "set them to match", list(cfg.data.norm_mean), list(cfg.data.norm_std), builder.arch,
                        list(mean), list(std))


def build_engine(cfg: CfgNode, dm) -> Tuple[object, torch.nn.Module]:
    """The engine for ``cfg.model.name`` (:class:`LFEMEngine` for plugin models, torchreid's otherwise) and the
    model on this process's device."""
    use_gpu = cfg.use_gpu and torch.cuda.is_available()
    model = build_model(cfg, dm.num_train_pids, dm.num_train_cams, train_cameras(dm))
    return family(cfg).build_engine(cfg, dm, model.to(D.local_device(use_gpu)), use_gpu)


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


def run(cfg: CfgNode, resume: str = "", weights: str = "") -> Optional[LFEMEngine]:
    """Train (or test, with ``test.evaluate``) as configured; returns the engine (results in ``last_results``), or
    None when the checkpoint to resume from already finished the run (nothing is written then). ``weights``: a
    checkpoint loaded strictly into the model before the run (``lfem-reid test``; a mismatch names the keys).

    Everything checkable is checked before the first step (:mod:`lfem_plugin.preflight`); one training at a time
    may use ``data.save_dir`` (:class:`~lfem_plugin.run_lock.RunLock`). Under ``torchrun`` (``WORLD_SIZE > 1``) it
    trains with DistributedDataParallel: one process per GPU (gloo on CPU), each loading whole identities of every
    global batch; rank 0 logs, evaluates and checkpoints.
    """
    preflight.check_config(cfg)
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
            engine = _train(cfg, resume, weights)
    finally:
        if lock is not None:
            lock.release()
    D.shutdown()  # on success only: after an error on one rank a barrier would wait forever
    return engine


def _train(cfg: CfgNode, resume: str, weights: str = "") -> LFEMEngine:
    set_seed(cfg.train.seed)
    os.makedirs(cfg.data.save_dir, exist_ok=True)
    dm = build_datamanager(cfg)
    preflight.check_data(cfg, dm, sie_cameras(cfg, dm))
    engine, model = build_engine(cfg, dm)
    if weights:
        state = load_checkpoint(weights)
        load_state_strict(_unwrap(model), state.get("state_dict", state), weights, f"model {cfg.model.name}")
    kwargs = C.engine_run_kwargs(cfg)
    if resume:
        kwargs["start_epoch"] = engine.resume(resume)
    engine.run(**kwargs)
    return engine
