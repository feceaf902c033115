"""Use a trained model elsewhere: rebuild it from a checkpoint and extract features (ONNX:
:mod:`lfem_plugin.tools.export`).

Without camera ids the model leaves the SIE term out (what torchreid's ``FeatureExtractor`` does); pass the cameras
to get exactly the features of the engine's evaluation path.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..config import load_config, model_kwargs
from ..config.adapters import MODEL_ARG_KEYS
from ..data.io import BadImageError, cameras_from_names, list_images, read_image  # noqa: F401  (re-exported)
from ..data.transforms import build_test_transform
from ..models.interface import BuildArgs
from ..models.lfem_vit import build_args_of
from ..registry import MODELS
from ..utils.finite import require_finite_features
from ..utils.checkpoint import load_checkpoint, load_state_strict, trained_size
from ..utils.state_layout import trained_state_dict
from .export import export_onnx  # noqa: F401  (re-exported)

__all__ = ["load_trained", "rebuild_model", "extract_features", "export_onnx", "list_images", "read_image",
           "cameras_from_names", "BadImageError"]  # the last five: export, data.io

_logger = logging.getLogger(__name__)


def load_trained(weights: str, config_file: Optional[str] = None, opts: Sequence[str] = (),
                 device: str = "cpu") -> Tuple[nn.Module, object]:
    """Rebuild a plugin model from its checkpoint (config from ``config_file`` or stored in the checkpoint) and
    load it strictly; the error names missing and unexpected keys."""
    state = load_checkpoint(weights)
    if config_file:
        cfg = load_config(config_file, opts)
    elif "config" in state:
        cfg = load_config(None, opts, text=state["config"])
    elif "model.name" in list(opts)[0::2]:  # e.g. a checkpoint of torchreid's engine: the variant's own settings
        cfg = load_config(None, opts)
    else:
        raise ValueError(f"{weights} holds no config (written by torchreid's engine?); name the model with --model "
                         f"NAME (plus --set KEY VALUE for settings it was trained with that differ from the "
                         f"variant's, e.g. --set data.height 384), or pass the training config with --config-file")
    explicit = None if config_file else [str(key) for key in list(opts)[0::2]]
    return rebuild_model(state, cfg, weights, explicit).to(device).eval(), cfg


# The config keys a user may set on a rebuilt model, -> the builder arguments each one changes.
_KEY_ARGS = {**{key: (arg,) for arg, key in MODEL_ARG_KEYS.items()}, "data.height": ("img_size",),
             "data.width": ("img_size",), "lfem.views": ("views", "num_views"), "lfem.proj_dim": ("lfem_proj_dim",),
             "lfem.use_sie": ("num_cameras", "camera_ids")}


def rebuild_model(state: Dict[str, Any], cfg, weights: str, explicit: Optional[Sequence[str]] = None) -> nn.Module:
    """The model of checkpoint ``state``, its weights loaded strictly (on the CPU, in train mode).

    A checkpoint with ``model_build`` (every resolved builder argument, lfem_plugin >= 0.3) is rebuilt from it
    alone: the classifier, SIE table and sizes are the checkpoint's, not the data's, the registered name's current
    settings or the defaults; only the config keys in ``explicit`` (the user's ``KEY VALUE`` overrides) change the
    builder arguments they carry (e.g. ``data.height`` resamples the position embedding). ``explicit`` None (a
    ``--config-file``), or an older checkpoint: built from ``cfg`` plus the stored ``model_args`` (or the sizes the
    state dict's shapes give), as before. Raises KeyError for a name that is not a plugin model.
    """
    sd = trained_state_dict(state)  # also fast-reid's {"model": ...} and TransReID's key names
    spec = state.get("model_build") if explicit is not None else None
    name = spec["name"] if spec else cfg.model.name
    if name not in MODELS:
        raise KeyError(f"{name!r} is not a plugin model; choices: {sorted(MODELS)} (torchreid models: use "
                       f"torchreid.utils.FeatureExtractor; a research project's model: import its package first)")
    # the sizes the training data gave: stored by the plugin's engines; the legacy path (a torchreid engine's or a
    # pre-0.2 checkpoint: only the state dict) reads them from its shapes
    args = BuildArgs.from_stored(state["model_args"]) if "model_args" in state else build_args_of(sd)
    full = dict(model_kwargs(cfg, args.num_cameras, args.camera_ids), num_classes=args.num_classes,
                loss=cfg.loss.name)
    if spec:
        kwargs = dict(spec["kwargs"])
        changed = {arg for key in explicit for arg in _KEY_ARGS.get(key, ())}
        kwargs.update({arg: full[arg] for arg in changed})
    else:
        kwargs = full
    kwargs["pretrained_path"] = None
    model = MODELS.get(name)(pretrained=False, **kwargs)
    load_state_strict(model, sd, weights, f"{name} built from its {'checkpoint' if spec else 'config'}",
                      trained_size(state))
    return model


@torch.no_grad()
def extract_features(model: nn.Module, paths: Sequence[str], height: int, width: int, mean, std,
                     cameras: Optional[Sequence[int]] = None, batch_size: int = 64, device: str = "cpu",
                     skip_bad_images: bool = False, what: str = "features") -> Tuple[np.ndarray, List[str]]:
    """Features ``(N, D)`` of the readable images, and their paths (bad ones skipped with a warning if asked);
    non-finite features are refused naming ``what`` and the images.

    Raises:
        BadImageError: an unreadable image (without ``skip_bad_images``), or none readable.
        NonFiniteFeaturesError: a feature holds NaN or inf, naming the images.
    """
    from tqdm import tqdm
    transform = build_test_transform(height, width, mean, std)
    if cameras is not None and len(cameras) != len(paths):
        raise ValueError(f"{len(cameras)} camera ids for {len(paths)} images")
    feats, kept, skipped = [], [], 0
    batch, batch_cams = [], []
    items = list(zip(paths, cameras if cameras is not None else [None] * len(paths)))
    for i, (path, cam) in enumerate(tqdm(items, desc="extract", unit="img", disable=not sys.stderr.isatty())):
        try:
            batch.append(transform(read_image(path)))
        except BadImageError:
            if not skip_bad_images:
                raise
            _logger.warning("skipping unreadable image %s", path)
            skipped += 1
            continue
        kept.append(path)
        batch_cams.append(cam)
        if len(batch) == batch_size or i == len(items) - 1:
            camera = torch.tensor(batch_cams, device=device) if cameras is not None else None
            feats.append(model(torch.stack(batch).to(device), camera=camera).float().cpu())
            batch, batch_cams = [], []
    if batch:
        camera = torch.tensor(batch_cams, device=device) if cameras is not None else None
        feats.append(model(torch.stack(batch).to(device), camera=camera).float().cpu())
    if skipped:
        _logger.warning("skipped %d unreadable image(s) of %d", skipped, len(paths))
    if not feats:
        raise BadImageError("no readable image")
    out = torch.cat(feats).numpy()
    require_finite_features(out, kept, what)
    return out, kept
