"""yacs configuration: torchreid's keys (``scripts/default_config.py`` names) plus one ``lfem`` namespace.

Library code never reads the config: the ``*_kwargs(cfg)`` adapters turn it into keyword arguments.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml
from yacs.config import CfgNode as CN

__all__ = ["get_default_config", "load_config", "load_yaml_with_base", "apply_variant", "imagedata_kwargs",
           "model_kwargs", "optimizer_kwargs", "scheduler_kwargs", "criterion_kwargs", "engine_run_kwargs",
           "lfem_engine_kwargs", "torchreid_optimizer_kwargs", "torchreid_engine_kwargs", "test_transform_kwargs",
           "transform_kwargs", "sie_mode", "target_sie", "build_model_kwargs", "acceleration_kwargs",
           "distributed_loader_kwargs", "visibility_targets"]

BASE_KEY = "_BASE_"


def get_default_config() -> CN:
    """A fresh config; every key has a comment."""
    cfg = CN()
    cfg.use_gpu = True  # use CUDA when available
    cfg.model = CN()
    cfg.model.name = "lfem_vit"  # any name registered in torchreid's model factory
    cfg.model.pretrained = True  # ImageNet weights of the backbone (model.pretrained_path, else the download cache)
    cfg.model.pretrained_path = ""  # local file of the backbone's ImageNet weights (plugin models)
    cfg.model.load_weights = ""  # trained weights of the whole model (torchreid's meaning: test, fine-tune)
    cfg.model.resume = ""  # checkpoint to resume training from
    cfg.data = CN()
    cfg.data.type = "image"  # torchreid's key; only 'image' is supported (checked before a run)
    cfg.data.root = "reid-data"  # data root
    cfg.data.sources = ["occluded_duke"]  # training datasets
    cfg.data.targets = ["occluded_duke"]  # evaluation datasets
    cfg.data.workers = 4  # data loader processes
    cfg.data.height = 256  # input height
    cfg.data.width = 128  # input width
    cfg.data.norm_mean = [0.5, 0.5, 0.5]  # normalisation mean (the jx ViT weights use 0.5)
    cfg.data.norm_std = [0.5, 0.5, 0.5]  # normalisation std
    cfg.data.save_dir = "log/lfem"  # output folder: logs, TensorBoard, checkpoints
    cfg.data.skip_bad_images = False  # drop unreadable images when building the plugin's datasets (decodes all)
    _add_training_config(cfg)
    _add_test_config(cfg)
    add_lfem_config(cfg)
    return cfg


def _add_training_config(cfg: CN) -> None:
    """torchreid's ``sampler``, ``train``, ``sgd`` and ``loss`` keys."""
    cfg.sampler = CN()
    cfg.sampler.train_sampler = "RandomIdentitySampler"  # torchreid sampler name (P x K)
    cfg.sampler.num_instances = 3  # K images per identity in a batch
    cfg.train = CN()
    cfg.train.optim = "sgd"  # 'sgd' or 'adamw'
    cfg.train.lr = 8e-3  # base learning rate
    cfg.train.weight_decay = 1e-4  # weight decay of non-bias parameters
    cfg.train.max_epoch = 200  # epochs
    cfg.train.start_epoch = 0  # first epoch (set by resume)
    cfg.train.batch_size = 48  # P x K images per batch (16 ids x 3)
    cfg.train.print_freq = 20  # log every N iterations
    cfg.train.seed = 1  # random seed
    cfg.train.checkpoint_period = 20  # save a resumable checkpoint every N epochs (0: only at evaluations/end)
    cfg.train.save_checkpoints = True  # write checkpoints at all (comparisons turn it off to save disk)
    cfg.sgd = CN()
    cfg.sgd.momentum = 0.9  # SGD momentum
    cfg.loss = CN()
    cfg.loss.name = "triplet"  # torchreid loss contract for stock engines: 'softmax' or 'triplet'
    cfg.loss.triplet = CN()
    cfg.loss.triplet.margin = 0.3  # triplet margin alpha (paper: 0.3)
    cfg.loss.triplet.weight_t = 1.0  # triplet weight (torchreid engines; plugin: scales every triplet term)
    cfg.loss.triplet.weight_x = 1.0  # CE weight (torchreid engines; plugin: scales every CE term)
    cfg.loss.softmax = CN()
    cfg.loss.softmax.label_smooth = False  # label smoothing (off in TransReID's Occluded-Duke recipe)


def _add_test_config(cfg: CN) -> None:
    """torchreid's ``test`` keys."""
    cfg.test = CN()
    cfg.test.batch_size = 256  # evaluation batch size
    cfg.test.dist_metric = "euclidean"  # 'euclidean' or 'cosine'
    cfg.test.normalize_feature = True  # L2-normalise features before distances (paper)
    cfg.test.ranks = [1, 5, 10]  # CMC ranks to report
    cfg.test.evaluate = False  # evaluation only
    cfg.test.eval_freq = 20  # evaluate every N epochs (-1: only at the end)
    cfg.test.start_eval = 0  # first epoch that may evaluate
    cfg.test.rerank = False  # k-reciprocal re-ranking (off in the paper)
    cfg.test.visrank = False  # write ranked-list images (test only)
    cfg.test.visrank_topk = 10  # gallery images per ranked list
    cfg.test.use_cameras = True  # pass query/gallery camera ids to the model (SIE) at evaluation
    # SIE for a target that is not a training source (its cameras mean nothing to the model): 'mean' (every image
    # gets the mean SIE row), 'off' (no SIE term) or 'cameras' (its own ids, like a source's; unknown ones fail)
    cfg.test.cross_domain_sie = "mean"


def add_lfem_config(cfg: CN) -> None:
    """The plugin's own keys, all under ``cfg.lfem``."""
    cfg.lfem = CN()
    cfg.lfem.stride = 11  # patch stride of the ViT backbone (plugin models)
    cfg.lfem.sie_coef = 3.0  # camera SIE coefficient
    cfg.lfem.use_sie = True  # camera SIE (number of cameras from the training set)
    cfg.lfem.drop_path_rate = 0.1  # stochastic depth
    cfg.lfem.num_groups = 4  # JPM local groups
    cfg.lfem.rearrange = True  # JPM shift + shuffle
    cfg.lfem.shift_num = 5  # JPM shift (TransReID convention)
    cfg.lfem.shuffle_groups = 2  # JPM shuffle chunks
    cfg.lfem.use_lfem = True  # LFEM fusion (False: TransReID heads; ablation "RE&RC only")
    cfg.lfem.views = ["original", "erased", "cropped"]  # training views (["original"]: ablation "LFEM only")
    cfg.lfem.proj_dim = 0  # LFEM projection width (0: the feature width)
    cfg.lfem.scale_gate = True  # scale the LFEM relation by 1/sqrt(proj_dim)
    cfg.lfem.share = False  # one LFEM for all groups
    cfg.lfem.local_feature = "refined"  # local branch supervision: 'refined' | 'jpm' | 'fused'
    cfg.lfem.neck_feat = "before"  # evaluation feature before/after the BNNeck
    cfg.lfem.eval_feature = "final"  # 'final' (f_final) or 'concat' (TransReID's concatenation)
    cfg.lfem.loss_weights = "transreid"  # 'transreid' (0.5 mean of globals + 0.5 mean of locals) or 'paper' (all 1)
    cfg.lfem.soft_margin = False  # soft-margin triplet instead of margin
    cfg.lfem.flip_prob = 0.5  # horizontal flip probability
    cfg.lfem.padding = 10  # zero padding before the random crop
    cfg.lfem.re_prob = 0.5  # random erasing probability of the original view
    cfg.lfem.crop_scale = [0.5, 1.0]  # random-cropping view: area fraction range
    cfg.lfem.crop_ratio = [0.375, 0.667]  # random-cropping view: width/height range
    cfg.lfem.warmup_epochs = 5  # linear warmup epochs
    cfg.lfem.warmup_factor = 0.01  # warmup starts at this fraction of lr
    cfg.lfem.min_lr_factor = 0.002  # cosine ends at this fraction of lr
    cfg.lfem.bias_lr_factor = 2.0  # bias lr multiplier
    cfg.lfem.weight_decay_bias = 1e-4  # bias weight decay
    cfg.lfem.amp = "bf16"  # mixed precision on CUDA: 'bf16', 'fp16' or 'off' (always off on CPU)
    cfg.lfem.grad_clip = 0.0  # max gradient norm (0: off)
    cfg.lfem.compile = False  # torch.compile the model (nn.Module.compile: checkpoints keep their keys)
    cfg.lfem.tf32 = True  # TF32 matmuls/convolutions on Ampere+ GPUs for what runs in fp32 (CUDA only)
    # Visibility-aware LFEM (beyond the paper; the model lfem_vit_vis sets all three, docs: README "visibility"):
    cfg.lfem.gate_supervision = 0.0  # weight of BCE(gate logit, group visible fraction of its own view); 0 = paper
    cfg.lfem.occluder = "noise"  # erased rectangles: 'noise' (paper, timm pixel mode) or 'paste' (another identity)
    cfg.lfem.gate_scope = "refined"  # the gate scales 'refined' (paper: f' only) or 'local' (f_l + f')


def load_yaml_with_base(path: str | os.PathLike, _chain: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    """Read a YAML mapping; a ``_BASE_`` key (relative to the file) is loaded first and deep-merged under it.

    Errors name the file: missing, not valid YAML (with the line), not a mapping, or a ``_BASE_`` loop.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found" + (f" (the _BASE_ of {_chain[-1]})" if _chain else ""))
    if path.resolve() in _chain:
        loop = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ValueError(f"_BASE_ loop in config files: {loop}; remove one of the _BASE_ keys")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of keys (e.g. 'train: {{max_epoch: 10}}'), not a "
                         f"{type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    merged = load_yaml_with_base(path.parent / base, (*_chain, path.resolve()))
    _deep_merge(merged, data)
    return merged


def _deep_merge(into: Dict[str, Any], new: Dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def _merge(cfg: CN, source: str, merge) -> None:
    """Run one yacs merge; its KeyError / AssertionError / ValueError, and keys left without a value (null), become
    an error naming ``source``."""
    try:
        merge()
    except (KeyError, AssertionError) as err:  # yacs: KeyError from files, AssertionError from KEY VALUE lists
        raise KeyError(f"unknown config key in {source}: {err}; see lfem_plugin/config.py for the valid "
                       f"keys") from None
    except ValueError as err:  # yacs: type mismatch, odd number of KEY VALUE items
        raise ValueError(f"bad value in {source}: {' '.join(str(err).split())}") from None
    nulls = _null_keys(cfg, get_default_config())
    if nulls:
        raise ValueError(f"config keys without a value (null/None) in {source}: {', '.join(nulls)}; give each a "
                         f"value, or delete it to keep the default")


def _null_keys(cfg: CN, defaults: CN, prefix: str = "") -> List[str]:
    found = []
    for key, value in cfg.items():
        default = defaults.get(key)
        if isinstance(value, CN):
            found += _null_keys(value, default, f"{prefix}{key}.")
        elif value is None and default is not None:
            found.append(f"{prefix}{key}")
    return found


def load_config(path: str | os.PathLike | None = None, opts: List[str] = (), text: Optional[str] = None) -> CN:
    """Defaults, then the YAML file (with ``_BASE_``) or YAML ``text`` (a config stored in a checkpoint), then
    ``KEY VALUE`` overrides; frozen. Unknown keys, wrong types and empty (null) values fail with the key's name and
    the place it came from."""
    cfg = get_default_config()
    explicit: Dict[str, str] = {}  # key -> where it was set
    data = load_yaml_with_base(path) if path else (yaml.safe_load(text) or {}) if text else {}
    if data:
        source = f"config file {path}" if path else "the checkpoint's stored config"
        _merge(cfg, source, lambda: cfg.merge_from_other_cfg(CN(data)))
        explicit.update(dict.fromkeys(_flat_keys(data), source))
    if opts:
        if len(opts) % 2:
            raise ValueError(f"the KEY VALUE overrides have an odd number of items ({' '.join(map(str, opts))}): "
                             f"every key needs a value")
        _merge(cfg, "the KEY VALUE overrides", lambda: cfg.merge_from_list(list(opts)))
        explicit.update(dict.fromkeys(map(str, opts[0::2]), "the KEY VALUE overrides"))
    apply_variant(cfg, explicit)
    cfg.freeze()
    return cfg


def _flat_keys(data: Dict[str, Any], prefix: str = "") -> List[str]:
    keys = []
    for key, value in data.items():
        keys += _flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return keys


# Builder argument of a registered variant -> the config key that carries it (img_size and num_views: see below).
_VARIANT_KEYS = {"stride": "lfem.stride", "sie_coef": "lfem.sie_coef", "drop_path_rate": "lfem.drop_path_rate",
                 "use_lfem": "lfem.use_lfem", "eval_feature": "lfem.eval_feature",
                 "local_feature": "lfem.local_feature", "rearrange": "lfem.rearrange", "gate_scope": "lfem.gate_scope",
                 "gate_supervision": "lfem.gate_supervision", "occluder": "lfem.occluder"}


def _variant_values(arg: str, value: Any) -> Dict[str, Any]:
    """The config values of one variant setting ({} for settings no key carries, e.g. num_cameras)."""
    if arg == "img_size":
        return {"data.height": int(value[0]), "data.width": int(value[1])}
    if arg == "num_views":
        from .models.lfem_vit import VIEW_NAMES
        return {"lfem.views": list(VIEW_NAMES[:value])}
    return {_VARIANT_KEYS[arg]: value} if arg in _VARIANT_KEYS else {}


def _get(cfg: CN, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _set(cfg: CN, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[last] = value


def apply_variant(cfg: CN, explicit: Dict[str, str]) -> None:
    """A registered variant's own settings (e.g. ``vit_transreid``: no LFEM, one view) replace the defaults of the
    keys that carry them; keys the user set (``explicit``: key -> where) win, except that one contradicting a setting
    the name fixes (``builder.fixed``, e.g. ``lfem.use_lfem true`` with ``vit_transreid``) is an error naming both.
    torchreid's own models have no variant settings."""
    from .registry import MODELS
    if cfg.model.name not in MODELS:
        return
    builder = MODELS.get(cfg.model.name)
    for arg, value in getattr(builder, "settings", {}).items():
        for key, wanted in _variant_values(arg, value).items():
            if key not in explicit:
                _set(cfg, key, wanted)
            elif arg in getattr(builder, "fixed", ()) and not _agrees(arg, _get(cfg, key), wanted):
                raise ValueError(f"{key} {_get(cfg, key)} (in {explicit[key]}) contradicts the model "
                                 f"{cfg.model.name}, which fixes {key} {wanted}; remove the key, or choose a model "
                                 f"whose name allows it (e.g. lfem_vit, whose switches are all keys)")


def _agrees(arg: str, value: Any, wanted: Any) -> bool:
    if arg == "num_views":
        return len(value) == len(wanted)
    return value == wanted


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


def distributed_loader_kwargs(cfg: CN) -> Dict[str, Any]:
    """One rank's share of every global P x K batch under ``torchrun``: the global batch, K, the seed, loader
    workers."""
    return dict(batch_size=cfg.train.batch_size, num_instances=cfg.sampler.num_instances, seed=cfg.train.seed,
                workers=cfg.data.workers, pin_memory=cfg.use_gpu, sampler=cfg.sampler.train_sampler)


def model_kwargs(cfg: CN, num_cameras: int, camera_ids: Optional[List[int]] = None) -> Dict[str, Any]:
    """Extra builder arguments for plugin models (torchreid's own models take none); ``camera_ids`` are the raw
    camera ids of the training set (one SIE row each)."""
    sie = dict(num_cameras=num_cameras, camera_ids=camera_ids) if cfg.lfem.use_sie else dict(num_cameras=0)
    return dict(img_size=(cfg.data.height, cfg.data.width), stride=cfg.lfem.stride, sie_coef=cfg.lfem.sie_coef,
                **sie, drop_path_rate=cfg.lfem.drop_path_rate,
                num_groups=cfg.lfem.num_groups, rearrange=cfg.lfem.rearrange, shift_num=cfg.lfem.shift_num,
                shuffle_groups=cfg.lfem.shuffle_groups, use_lfem=cfg.lfem.use_lfem, num_views=len(cfg.lfem.views),
                views=tuple(cfg.lfem.views),
                lfem_proj_dim=cfg.lfem.proj_dim or None, lfem_scale_gate=cfg.lfem.scale_gate,
                lfem_share=cfg.lfem.share, local_feature=cfg.lfem.local_feature, neck_feat=cfg.lfem.neck_feat,
                eval_feature=cfg.lfem.eval_feature, gate_scope=cfg.lfem.gate_scope,
                pretrained_path=cfg.model.pretrained_path or None)


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
    cameras), ``test.cross_domain_sie`` for any other, ``'off'`` with ``test.use_cameras`` False."""
    if not cfg.test.use_cameras:
        return "off"
    return "cameras" if dataset in cfg.data.sources else cfg.test.cross_domain_sie


def target_sie(cfg: CN) -> Dict[str, str]:
    """:func:`sie_mode` of every target."""
    return {name: sie_mode(cfg, name) for name in cfg.data.targets}


def visibility_targets(cfg: CN) -> bool:
    """Does training need each view's hidden rectangle and group visibility (gate supervision or pasting)?"""
    return cfg.lfem.gate_supervision > 0 or cfg.lfem.occluder == "paste"


def lfem_engine_kwargs(cfg: CN) -> Dict[str, Any]:
    return dict(amp=cfg.lfem.amp, grad_clip=cfg.lfem.grad_clip, use_cameras=cfg.test.use_cameras,
                gate_supervision=cfg.lfem.gate_supervision, occluder=cfg.lfem.occluder,
                target_sie=target_sie(cfg),
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
