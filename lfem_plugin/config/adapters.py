"""Config -> keyword arguments: the ``*_kwargs(cfg)`` adapters, so that library code never reads the config.

Reference: torchreid ``scripts/default_config.py`` (``imagedata_kwargs``, ``optimizer_kwargs``, ...).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from yacs.config import CfgNode as CN

__all__ = ["MODEL_ARG_KEYS", "config_value", "imagedata_kwargs", "model_kwargs", "optimizer_kwargs",
           "scheduler_kwargs", "criterion_kwargs", "engine_run_kwargs", "lfem_engine_kwargs",
           "torchreid_optimizer_kwargs", "torchreid_engine_kwargs", "test_transform_kwargs", "transform_kwargs",
           "sie_mode", "market_layout_kwargs", "target_sie", "build_model_kwargs", "acceleration_kwargs",
           "distributed_loader_kwargs", "loader_kwargs", "TRAINING_KEYS", "variant_keys"]


def imagedata_kwargs(cfg: CN, transforms: Optional[List[str]] = None) -> Dict[str, Any]:
    """torchreid ``ImageDataManager`` arguments, with torchreid's train ``transforms`` (names; None: none)."""
    return dict(root=cfg.data.root, sources=list(cfg.data.sources), targets=list(cfg.data.targets),
                height=cfg.data.height, width=cfg.data.width, transforms=transforms,
                norm_mean=list(cfg.data.norm_mean),
                norm_std=list(cfg.data.norm_std), use_gpu=cfg.use_gpu, batch_size_train=cfg.train.batch_size,
                batch_size_test=cfg.test.batch_size, workers=cfg.data.workers,
                num_instances=cfg.sampler.num_instances, train_sampler=cfg.sampler.train_sampler)


def transform_kwargs(cfg: CN) -> Dict[str, Any]:
    return dict(height=cfg.data.height, width=cfg.data.width, mean=tuple(cfg.data.norm_mean),
                std=tuple(cfg.data.norm_std), flip_prob=cfg.lfem.flip_prob, padding=cfg.lfem.padding,
                re_prob=cfg.lfem.re_prob, views=tuple(cfg.lfem.views), crop_scale=tuple(cfg.lfem.crop_scale),
                crop_ratio=tuple(cfg.lfem.crop_ratio))


def test_transform_kwargs(cfg: CN) -> Dict[str, Any]:
    return dict(height=cfg.data.height, width=cfg.data.width, mean=cfg.data.norm_mean, std=cfg.data.norm_std)


def build_model_kwargs(cfg: CN) -> Dict[str, Any]:
    """The arguments of torchreid's ``build_model`` contract that every model takes, plugin or torchreid."""
    return dict(loss=cfg.loss.name, pretrained=cfg.model.pretrained, use_gpu=cfg.use_gpu)


def acceleration_kwargs(cfg: CN) -> Dict[str, Any]:
    """``tf32`` (TF32 matmuls on CUDA) and ``compile`` (torch.compile) for plugin models."""
    return dict(tf32=cfg.lfem.tf32, compile=cfg.lfem.compile)


def loader_kwargs(cfg: CN) -> Dict[str, Any]:
    """The training loader's ``prefetch_factor`` and ``persistent_workers``."""
    return dict(prefetch_factor=cfg.data.prefetch_factor, persistent_workers=cfg.data.persistent_workers)


def distributed_loader_kwargs(cfg: CN) -> Dict[str, Any]:
    """One rank's share of every global P x K batch under ``torchrun``: the global batch, K, the seed, loader
    workers."""
    return dict(batch_size=cfg.train.batch_size, num_instances=cfg.sampler.num_instances, seed=cfg.train.seed,
                workers=cfg.data.workers, pin_memory=cfg.use_gpu, sampler=cfg.sampler.train_sampler)


# A plugin model builder's argument -> the config key that carries it, as it is: the one table for both directions
# (config -> builder in model_kwargs; a registered variant's settings -> config in loader.apply_variant).
# img_size, num_views/views, lfem_proj_dim, the SIE sizes and pretrained_path are converted: see model_kwargs.
MODEL_ARG_KEYS = {"stride": "lfem.stride", "sie_coef": "lfem.sie_coef", "drop_path_rate": "lfem.drop_path_rate",
                  "num_groups": "lfem.num_groups", "rearrange": "lfem.rearrange", "shift_num": "lfem.shift_num",
                  "shuffle_groups": "lfem.shuffle_groups", "use_lfem": "lfem.use_lfem",
                  "lfem_scale_gate": "lfem.scale_gate", "lfem_share": "lfem.share",
                  "local_feature": "lfem.local_feature", "neck_feat": "lfem.neck_feat",
                  "eval_feature": "lfem.eval_feature"}
# A registered variant's training settings (not builder arguments) -> their config keys (loader.apply_variant); the
# core's variants have none (a project's come with its keys: variant_keys).
TRAINING_KEYS: Dict[str, str] = {}


def variant_keys() -> Dict[str, str]:
    """Every registered variant setting -> the config key that carries it: the core's (``MODEL_ARG_KEYS``,
    ``TRAINING_KEYS``) and the registered projects' (:func:`lfem_plugin.config.extensions.register_keys`)."""
    from .extensions import extensions
    keys = {**MODEL_ARG_KEYS, **TRAINING_KEYS}
    for extension in extensions():
        keys.update(extension.variant_keys)
    return keys


def config_value(cfg: CN, key: str) -> Any:
    """The value of a dotted ``key`` (``'lfem.stride'``)."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def model_kwargs(cfg: CN, num_cameras: int, camera_ids: Optional[List[int]] = None) -> Dict[str, Any]:
    """Extra builder arguments for plugin models (torchreid's own models take none); ``camera_ids`` are the raw
    camera ids of the training set (one SIE row each)."""
    sie = dict(num_cameras=num_cameras, camera_ids=camera_ids) if cfg.lfem.use_sie else dict(num_cameras=0)
    return dict(img_size=(cfg.data.height, cfg.data.width), **sie, num_views=len(cfg.lfem.views),
                views=tuple(cfg.lfem.views), lfem_proj_dim=cfg.lfem.proj_dim or None,
                pretrained_path=cfg.model.pretrained_path or None,
                **{arg: config_value(cfg, key) for arg, key in MODEL_ARG_KEYS.items()})


def optimizer_kwargs(cfg: CN) -> Dict[str, Any]:
    return dict(optim=cfg.train.optim, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                momentum=cfg.sgd.momentum, bias_lr_factor=cfg.lfem.bias_lr_factor,
                weight_decay_bias=cfg.lfem.weight_decay_bias)


def scheduler_kwargs(cfg: CN) -> Dict[str, Any]:
    return dict(max_epoch=cfg.train.max_epoch, warmup_epochs=cfg.lfem.warmup_epochs,
                warmup_factor=cfg.lfem.warmup_factor, min_lr_factor=cfg.lfem.min_lr_factor)


def criterion_kwargs(cfg: CN, branch_weights: Sequence[float]) -> Dict[str, Any]:
    """:class:`~lfem_plugin.losses.MultiBranchLoss` arguments: per-branch CE / triplet weights (the branch weighting
    times torchreid's ``weight_x`` / ``weight_t``), margin (None: soft margin) and label smoothing."""
    return dict(id_weights=[w * cfg.loss.triplet.weight_x for w in branch_weights],
                triplet_weights=[w * cfg.loss.triplet.weight_t for w in branch_weights],
                margin=None if cfg.lfem.soft_margin else cfg.loss.triplet.margin,
                label_smoothing=0.1 if cfg.loss.softmax.label_smooth else 0.0)


def sie_mode(cfg: CN, dataset: str) -> str:
    """How the camera ids of ``dataset`` reach SIE at evaluation: ``'cameras'`` for a training source (same
    cameras; also a target reading a source's cameras, :data:`~lfem_plugin.data.market_layout.SAME_CAMERAS`),
    ``test.cross_domain_sie`` for any other, ``'off'`` with ``test.use_cameras`` False."""
    from ..data.market_layout import SAME_CAMERAS
    if not cfg.test.use_cameras:
        return "off"
    in_domain = dataset in cfg.data.sources or SAME_CAMERAS.get(dataset) in cfg.data.sources
    return "cameras" if in_domain else cfg.test.cross_domain_sie


def market_layout_kwargs(cfg: CN) -> Dict[str, str]:
    """:func:`lfem_plugin.data.market_layout.market_layout_options` arguments (``data.market_layout.*``)."""
    return dict(folder=cfg.data.market_layout.folder, query=cfg.data.market_layout.query,
                occluded_query=cfg.data.market_layout.occluded_query)


def target_sie(cfg: CN) -> Dict[str, str]:
    """:func:`sie_mode` of every target."""
    return {name: sie_mode(cfg, name) for name in cfg.data.targets}


def lfem_engine_kwargs(cfg: CN) -> Dict[str, Any]:
    return dict(amp=cfg.lfem.amp, eval_amp=cfg.test.amp, grad_clip=cfg.lfem.grad_clip,
                use_cameras=cfg.test.use_cameras, target_sie=target_sie(cfg),
                checkpoint_period=cfg.train.checkpoint_period, save_checkpoints=cfg.train.save_checkpoints,
                config_text=cfg.dump())


def torchreid_optimizer_kwargs(cfg: CN) -> Dict[str, Any]:
    return dict(optim=cfg.train.optim, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def torchreid_engine_kwargs(cfg: CN) -> Dict[str, Any]:
    """torchreid ``ImageSoftmaxEngine`` / ``ImageTripletEngine`` arguments (triplet ones only for that loss)."""
    kwargs = dict(label_smooth=cfg.loss.softmax.label_smooth, checkpoint_period=cfg.train.checkpoint_period,
                  save_checkpoints=cfg.train.save_checkpoints, config_text=cfg.dump())
    if cfg.loss.name != "softmax":
        kwargs.update(margin=cfg.loss.triplet.margin, weight_t=cfg.loss.triplet.weight_t,
                      weight_x=cfg.loss.triplet.weight_x)
    return kwargs


def engine_run_kwargs(cfg: CN) -> Dict[str, Any]:
    return dict(save_dir=cfg.data.save_dir, max_epoch=cfg.train.max_epoch, start_epoch=cfg.train.start_epoch,
                print_freq=cfg.train.print_freq, start_eval=cfg.test.start_eval, eval_freq=cfg.test.eval_freq,
                test_only=cfg.test.evaluate, dist_metric=cfg.test.dist_metric,
                normalize_feature=cfg.test.normalize_feature, visrank=cfg.test.visrank,
                visrank_topk=cfg.test.visrank_topk, ranks=list(cfg.test.ranks), rerank=cfg.test.rerank)
