"""ImageNet weights for the TransReID backbone: sources, download, and a pure checkpoint filter.

Reference: TransReID (ICCV 2021) initialises from the ImageNet ViT-B/16 (``jx_vit_base_p16_224-80ecf9dd.pth``,
the same tensors as timm's ``vit_base_patch16_224.orig_in21k_ft_in1k``) or DeiT-B weights.
"""
from __future__ import annotations

import logging
import math
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import resample_abs_pos_embed
from torch import nn

from .patch_embed import patch_grid

__all__ = ["WeightSource", "WEIGHT_SOURCES", "checkpoint_filter_fn", "load_pretrained", "resolve_weights",
           "load_state_dict_file", "resample_trained_pos_embed"]

_logger = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # timm's, as its weights were trained


@dataclass(frozen=True)
class WeightSource:
    """Where a checkpoint comes from and the input normalisation it was trained with."""

    url: str
    filename: str
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]


WEIGHT_SOURCES: Dict[str, WeightSource] = {
    # JAX-ported ImageNet-21k -> 1k ViT-B/16 used by TransReID (timm tag vit_base_patch16_224.orig_in21k_ft_in1k).
    "vit_base_patch16_224.jx": WeightSource(
        "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth",
        "jx_vit_base_p16_224-80ecf9dd.pth", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "deit_base_distilled_patch16_224": WeightSource(
        "https://dl.fbaipublicfiles.com/deit/deit_base_distilled_patch16_224-df68dfff.pth",
        "deit_base_distilled_patch16_224-df68dfff.pth", IMAGENET_MEAN, IMAGENET_STD),
    "deit_small_distilled_patch16_224": WeightSource(
        "https://dl.fbaipublicfiles.com/deit/deit_small_distilled_patch16_224-649709d9.pth",
        "deit_small_distilled_patch16_224-649709d9.pth", IMAGENET_MEAN, IMAGENET_STD),
}

_DROP_PREFIXES = ("head.", "head_dist.", "fc.", "pre_logits.")


def load_state_dict_file(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` with an actionable error for pickled objects or broken files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name and what to do
        raise RuntimeError(f"could not load {path} safely (torch.load weights_only=True): {err}. The file is either "
                           f"corrupt or holds pickled Python objects; only tensor state dicts are accepted. "
                           f"Re-save it as a plain state dict from a trusted environment.") from err


def _unwrap(state_dict: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    for key in ("model", "state_dict"):
        if key in state_dict and isinstance(state_dict[key], Mapping):
            state_dict = state_dict[key]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def _resize_pos_embed(pos_embed: torch.Tensor, grid_size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear, no antialias (TransReID-exact); drops a DeiT distillation token if present."""
    num_tokens = pos_embed.shape[1]
    for prefix in (1, 2):
        side = math.isqrt(num_tokens - prefix)
        if side * side == num_tokens - prefix:
            break
    else:
        raise ValueError(f"pos_embed with {num_tokens} tokens is not a square grid plus 1 or 2 prefix tokens")
    pos_embed = torch.cat([pos_embed[:, :1], pos_embed[:, prefix:]], dim=1)
    if (side, side) == tuple(grid_size):
        return pos_embed
    return resample_abs_pos_embed(pos_embed, new_size=list(grid_size), old_size=[side, side], num_prefix_tokens=1,
                                  interpolation="bilinear", antialias=False)


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Map a standard ViT/DeiT ImageNet state dict onto a :class:`~lfem_plugin.models.vit.TransReIDViT`.

    Unwraps ``model``/``state_dict``/``module.``, drops classifier heads and the distillation token, reshapes
    legacy linear patch weights to conv, resizes ``pos_embed`` to the ReID grid (bilinear, no antialias), and -
    when the model has a JPM - copies the last block and final norm into its global and local branches.
    """
    out: Dict[str, torch.Tensor] = {}
    model_sd = model.state_dict()
    for key, value in _unwrap(state_dict).items():
        if key.startswith(_DROP_PREFIXES) or key == "dist_token":
            continue
        if key == "patch_embed.proj.weight" and value.dim() < 4:
            value = value.reshape(model_sd[key].shape)
        elif key == "pos_embed":
            value = _resize_pos_embed(value, model.patch_embed.grid_size)
        out[key] = value
    if getattr(model, "jpm", None) is not None:
        last = f"blocks.{model.depth - 1}."
        for key in [k for k in out if k.startswith(last) or k.startswith("norm.")]:
            value = out.pop(key)
            rest = key[len(last):] if key.startswith(last) else key
            prefix = "block." if key.startswith(last) else ""
            for branch in ("global_branch", "local_branch"):
                out[f"jpm.{branch}.{prefix}{rest}"] = value.clone()
    return out


def resolve_weights(source: str, path: Optional[str] = None) -> Path:
    """Local path of the weights for ``source``: ``path`` if given, else the ``$TORCH_HOME`` cache (downloaded)."""
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"ImageNet weights {path} not found (model.pretrained_path / pretrained_path)")
        return Path(path)
    if source not in WEIGHT_SOURCES:
        raise KeyError(f"unknown weight source {source!r}; choices: {sorted(WEIGHT_SOURCES)}")
    spec = WEIGHT_SOURCES[source]
    cache = Path(torch.hub.get_dir()) / "checkpoints" / spec.filename
    if cache.is_file():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    _logger.info("downloading %s to %s", spec.url, cache)
    try:
        torch.hub.download_url_to_file(spec.url, str(cache), progress=True)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise RuntimeError(f"could not download the ImageNet weights {spec.filename} from {spec.url} ({err}). "
                           f"Without network access, download the file elsewhere and put it at {cache} (the only "
                           f"place torchreid's build_model(..., pretrained=True) can use); with lfem-reid you can "
                           f"instead set model.pretrained_path FILE, and in Python pass pretrained_path=FILE to the "
                           f"builder (lfem_plugin.MODELS.get(name)).") from err
    return cache


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> None:
    """Load ImageNet weights into ``model`` through :func:`checkpoint_filter_fn`; log missing/unexpected keys."""
    filtered = checkpoint_filter_fn(load_state_dict_file(path), model)
    model_sd = model.state_dict()
    matched = [k for k in filtered if k in model_sd]
    if not matched:
        raise RuntimeError(f"no tensor of {path} matches the backbone's parameters; is it a ViT/DeiT checkpoint? "
                           f"First keys: {list(filtered)[:5]}")
    bad = [f"{k}: file {tuple(filtered[k].shape)} vs model {tuple(model_sd[k].shape)}"
           for k in matched if filtered[k].shape != model_sd[k].shape]
    if bad:
        raise RuntimeError(f"{path} does not fit this backbone (wrong width/depth?): " + "; ".join(bad[:5]))
    result = model.load_state_dict(filtered, strict=False)
    if result.missing_keys:
        _logger.info("pretrained %s: parameters left at init: %s", path, result.missing_keys)
    if result.unexpected_keys:
        _logger.warning("pretrained %s: ignored keys: %s", path, result.unexpected_keys)
    _logger.info("loaded %d tensors from %s", len(matched), path)


def resample_trained_pos_embed(state_dict: Mapping[str, torch.Tensor], model: nn.Module,
                               trained_size: Optional[Tuple[int, int]], source: str) -> Dict[str, torch.Tensor]:
    """A trained checkpoint's ``*pos_embed`` resampled to ``model``'s input size when the two differ (bilinear, no
    antialias: the ImageNet loader's and TransReID's choice), with a warning naming both sizes; never dropped.

    Args:
        state_dict: the checkpoint's tensors (``module.`` already stripped).
        model: the model they go into; each ``pos_embed``'s owner has a ``patch_embed`` (:class:`TransReIDViT`).
        trained_size: ``(height, width)`` the checkpoint was trained at (its stored config), None if unknown.
        source: the checkpoint's name, for messages.

    Raises:
        ValueError: a size differs but ``trained_size`` is unknown or does not give the checkpoint's token count.
    """
    own = model.state_dict()
    out = dict(state_dict)
    for key, value in state_dict.items():
        if not key.endswith("pos_embed") or key not in own or tuple(value.shape) == tuple(own[key].shape):
            continue
        embed = model.get_submodule(key.rpartition(".")[0]).patch_embed
        size, grid = tuple(embed.img_size), tuple(embed.grid_size)
        old = None if trained_size is None else patch_grid(tuple(trained_size), embed.patch_size[0], embed.stride)
        if old is None or old[0] * old[1] + 1 != value.shape[1]:
            known = f"trained at {trained_size[0]}x{trained_size[1]} per its config, " if trained_size else ""
            raise ValueError(f"{source}: {key} holds {value.shape[1] - 1} patch positions ({known}which does not fit "
                             f"them), the model at {size[0]}x{size[1]} has {grid[0] * grid[1]}; pass the size it "
                             f"was trained at (--set data.height H --set data.width W, or its --config-file)")
        out[key] = resample_abs_pos_embed(value, new_size=list(grid), old_size=list(old), num_prefix_tokens=1,
                                          interpolation="bilinear", antialias=False)
        _logger.warning("%s was trained at %dx%d (%dx%d patches) and runs at %dx%d (%dx%d patches): its position "
                        "embedding %s is resampled (bilinear), so features differ from the model at its own size",
                        source, *trained_size, *old, *size, *grid, key)
    return out
