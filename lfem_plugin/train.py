"""Build the data manager, model, optimiser, scheduler and engine from a config, then train or test.

Mirrors the shape of torchreid's ``scripts/main.py`` (which PyPI torchreid does not ship).
"""
from __future__ import annotations

import logging
import os
import random
from typing import Tuple

import numpy as np
import torch
from yacs.config import CfgNode

from . import _torchreid, config as C
from . import distributed as D
from .data.datasets import set_skip_bad_images
from .data.sampler import DistributedIdentitySampler
from .data.transforms import build_test_transform, build_train_transform
from .engine import LFEMEngine, TorchreidSoftmaxEngine, TorchreidTripletEngine, _unwrap
from .losses import MultiBranchLoss, branch_weights
from .optim import WarmupCosineLR, build_optimizer
from .registry import MODELS

__all__ = ["build_datamanager", "build_model", "build_engine", "set_seed"]

_logger = logging.getLogger(__name__)
_TR = _torchreid.root()


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def is_plugin_model(name: str) -> bool:
    return name in MODELS


def build_datamanager(cfg: CfgNode):
    """torchreid's ``ImageDataManager``; plugin models get the multi-view train and the test transforms."""
    plugin = is_plugin_model(cfg.model.name)
    set_skip_bad_images(cfg.data.skip_bad_images)
    kwargs = C.imagedata_kwargs(cfg)
    if not plugin:  # torchreid models: torchreid's own transforms, with the configured normalisation
        kwargs.update(transforms=["random_flip"])
    dm = _TR.data.ImageDataManager(**kwargs)
    if plugin:
        dm.transform_tr = build_train_transform(**C.transform_kwargs(cfg))
        dm.transform_te = build_test_transform(cfg.data.height, cfg.data.width, cfg.data.norm_mean, cfg.data.norm_std)
        dm.train_loader.dataset.transform = dm.transform_tr
        for loaders in dm.test_loader.values():
            for loader in loaders.values():
                loader.dataset.transform = dm.transform_te
    if D.is_distributed():
        dm.train_loader = _distributed_loader(cfg, dm.train_loader)
    return dm


def _distributed_loader(cfg: CfgNode, loader):
    """Each rank loads its share (whole identities) of every global P x K batch."""
    if cfg.sampler.train_sampler != "RandomIdentitySampler":
        raise ValueError("multi-process training needs sampler.train_sampler RandomIdentitySampler")
    sampler = DistributedIdentitySampler(loader.dataset.train, cfg.train.batch_size, cfg.sampler.num_instances,
                                         D.rank(), D.world_size(), cfg.train.seed)
    return torch.utils.data.DataLoader(loader.dataset, batch_size=cfg.train.batch_size // D.world_size(),
                                       sampler=sampler, num_workers=cfg.data.workers, pin_memory=cfg.use_gpu,
                                       drop_last=True)


def build_model(cfg: CfgNode, num_classes: int, num_cameras: int) -> torch.nn.Module:
    name = cfg.model.name
    if is_plugin_model(name):
        _check_normalisation(cfg, MODELS.get(name))
        return MODELS.get(name)(num_classes=num_classes, loss=cfg.loss.name, pretrained=cfg.model.pretrained,
                                use_gpu=cfg.use_gpu, **C.model_kwargs(cfg, num_cameras))
    model = _TR.models.build_model(name, num_classes=num_classes, loss=cfg.loss.name,
                                   pretrained=cfg.model.pretrained, use_gpu=cfg.use_gpu)
    if cfg.model.load_weights:
        _TR.utils.load_pretrained_weights(model, cfg.model.load_weights)
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
    """The engine for ``cfg.model.name``: :class:`LFEMEngine` for plugin models, torchreid's otherwise."""
    use_gpu = cfg.use_gpu and torch.cuda.is_available()
    model = build_model(cfg, dm.num_train_pids, dm.num_train_cams)
    model = model.to(D.init_from_env() if use_gpu else "cpu")
    if not is_plugin_model(cfg.model.name):
        optimizer = _TR.optim.build_optimizer(model, optim=cfg.train.optim, lr=cfg.train.lr,
                                              weight_decay=cfg.train.weight_decay)
        scheduler = WarmupCosineLR(optimizer, **C.scheduler_kwargs(cfg))
        common = dict(scheduler=scheduler, use_gpu=use_gpu, label_smooth=cfg.loss.softmax.label_smooth,
                      checkpoint_period=cfg.train.checkpoint_period)
        if cfg.loss.name == "softmax":
            engine = TorchreidSoftmaxEngine(dm, model, optimizer, **common)
        else:
            engine = TorchreidTripletEngine(dm, model, optimizer, margin=cfg.loss.triplet.margin,
                                            weight_t=cfg.loss.triplet.weight_t, weight_x=cfg.loss.triplet.weight_x,
                                            **common)
        engine.config_text = cfg.dump()
        engine.save_checkpoints = cfg.train.save_checkpoints
        return engine, model
    optimizer = build_optimizer(model, **C.optimizer_kwargs(cfg))
    if D.is_distributed():
        # The trunk's last block is not built under JPM, so every parameter is used: no find_unused_parameters.
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()]
                                                          if use_gpu else None)
    scheduler = WarmupCosineLR(optimizer, **C.scheduler_kwargs(cfg))
    names = _unwrap(model).branch_names
    weights = branch_weights(names, cfg.lfem.loss_weights)
    criterion = MultiBranchLoss(names, [w * cfg.loss.triplet.weight_x for w in weights],
                                [w * cfg.loss.triplet.weight_t for w in weights], **C.loss_kwargs(cfg))
    engine = LFEMEngine(dm, model, optimizer, scheduler, criterion, use_gpu=use_gpu, amp=cfg.lfem.amp,
                        grad_clip=cfg.lfem.grad_clip, use_cameras=cfg.test.use_cameras,
                        checkpoint_period=cfg.train.checkpoint_period)
    engine.config_text = cfg.dump()
    engine.save_checkpoints = cfg.train.save_checkpoints
    return engine, model


def run(cfg: CfgNode, resume: str = "") -> LFEMEngine:
    """Train (or test, with ``test.evaluate``) as configured; returns the engine (results in ``last_results``).

    Under ``torchrun`` (``WORLD_SIZE > 1``) it trains with DistributedDataParallel: one process per GPU (gloo on
    CPU), each loading whole identities of every global batch; rank 0 logs, evaluates and checkpoints.
    """
    D.init_from_env()
    set_seed(cfg.train.seed)
    os.makedirs(cfg.data.save_dir, exist_ok=True)
    dm = build_datamanager(cfg)
    engine, _ = build_engine(cfg, dm)
    kwargs = C.engine_run_kwargs(cfg)
    if resume:
        kwargs["start_epoch"] = engine.resume(resume)
    engine.run(**kwargs)
    D.shutdown()  # on success only: after an error on one rank a barrier would wait forever
    return engine
