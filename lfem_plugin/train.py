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
from .data.transforms import build_test_transform, build_train_transform
from .engine import LFEMEngine
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
    kwargs = C.imagedata_kwargs(cfg)
    if not plugin:
        kwargs.update(transforms=["random_flip"], norm_mean=None, norm_std=None)
    dm = _TR.data.ImageDataManager(**kwargs)
    if plugin:
        dm.transform_tr = build_train_transform(**C.transform_kwargs(cfg))
        dm.transform_te = build_test_transform(cfg.data.height, cfg.data.width, cfg.data.norm_mean, cfg.data.norm_std)
        dm.train_loader.dataset.transform = dm.transform_tr
        for loaders in dm.test_loader.values():
            for loader in loaders.values():
                loader.dataset.transform = dm.transform_te
    return dm


def build_model(cfg: CfgNode, num_classes: int, num_cameras: int) -> torch.nn.Module:
    name = cfg.model.name
    if is_plugin_model(name):
        return MODELS.get(name)(num_classes=num_classes, loss=cfg.loss.name, pretrained=cfg.model.pretrained,
                                use_gpu=cfg.use_gpu, **C.model_kwargs(cfg, num_cameras))
    model = _TR.models.build_model(name, num_classes=num_classes, loss=cfg.loss.name,
                                   pretrained=cfg.model.pretrained, use_gpu=cfg.use_gpu)
    if cfg.model.load_weights:
        _TR.utils.load_pretrained_weights(model, cfg.model.load_weights)
    return model


def build_engine(cfg: CfgNode, dm) -> Tuple[object, torch.nn.Module]:
    """The engine for ``cfg.model.name``: :class:`LFEMEngine` for plugin models, torchreid's otherwise."""
    use_gpu = cfg.use_gpu and torch.cuda.is_available()
    model = build_model(cfg, dm.num_train_pids, dm.num_train_cams)
    model = model.cuda() if use_gpu else model
    if not is_plugin_model(cfg.model.name):
        optimizer = _TR.optim.build_optimizer(model, optim=cfg.train.optim, lr=cfg.train.lr,
                                              weight_decay=cfg.train.weight_decay)
        scheduler = WarmupCosineLR(optimizer, **C.scheduler_kwargs(cfg))
        if cfg.loss.name == "softmax":
            engine = _TR.engine.ImageSoftmaxEngine(dm, model, optimizer, scheduler=scheduler, use_gpu=use_gpu,
                                                   label_smooth=cfg.loss.softmax.label_smooth)
        else:
            engine = _TR.engine.ImageTripletEngine(dm, model, optimizer, margin=cfg.loss.triplet.margin,
                                                   weight_t=cfg.loss.triplet.weight_t,
                                                   weight_x=cfg.loss.triplet.weight_x, scheduler=scheduler,
                                                   use_gpu=use_gpu, label_smooth=cfg.loss.softmax.label_smooth)
        return engine, model
    optimizer = build_optimizer(model, **C.optimizer_kwargs(cfg))
    scheduler = WarmupCosineLR(optimizer, **C.scheduler_kwargs(cfg))
    weights = branch_weights(model.branch_names, cfg.lfem.loss_weights)
    criterion = MultiBranchLoss(model.branch_names, [w * cfg.loss.triplet.weight_x for w in weights],
                                [w * cfg.loss.triplet.weight_t for w in weights], **C.loss_kwargs(cfg))
    engine = LFEMEngine(dm, model, optimizer, scheduler, criterion, use_gpu=use_gpu, amp=cfg.lfem.amp,
                        grad_clip=cfg.lfem.grad_clip, use_cameras=cfg.test.use_cameras,
                        checkpoint_period=cfg.train.checkpoint_period)
    engine.config_text = cfg.dump()
    return engine, model


def run(cfg: CfgNode, resume: str = "") -> LFEMEngine:
    """Train (or test, with ``test.evaluate``) as configured; returns the engine (results in ``last_results``)."""
    set_seed(cfg.train.seed)
    os.makedirs(cfg.data.save_dir, exist_ok=True)
    dm = build_datamanager(cfg)
    engine, _ = build_engine(cfg, dm)
    kwargs = C.engine_run_kwargs(cfg)
    if resume:
        if not isinstance(engine, LFEMEngine):
            kwargs["start_epoch"] = _TR.utils.resume_from_checkpoint(resume, engine.model, engine.optimizer,
                                                                     engine.scheduler)
        else:
            kwargs["start_epoch"] = engine.resume(resume)
    engine.run(**kwargs)
    return engine
