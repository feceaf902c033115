"""The visibility study's config keys (in the ``lfem`` section, where they have always been, so every stored config
of its runs loads with the same keys) and the adapters that turn them into arguments.
"""
from __future__ import annotations

from typing import Any, Dict

from yacs.config import CfgNode as CN

from lfem_plugin.config import KeyExtension, register_keys

from .block import GATE_GRADS, GATE_INPUTS, GATE_SCOPES
from .occluders import OCCLUDERS

__all__ = ["add_visibility_config", "KEYS", "visibility_targets", "token_geometry_kwargs", "block_kwargs",
           "engine_kwargs", "is_on"]


def add_visibility_config(cfg: CN) -> None:
    """The study's keys; each default is the paper's behaviour."""
    cfg.lfem.gate_supervision = 0.0  # weight of BCE(gate logit, group visible fraction of its own view); 0 = paper
    # erased rectangles: 'noise' (paper, timm pixel mode), 'paste' (another identity's same rectangle) or
    # 'paste_resized' (a rectangle cut anywhere in another identity's image, resized into the erased one)
    cfg.lfem.occluder = "noise"
    cfg.lfem.gate_scope = "refined"  # the gate scales 'refined' (paper: f' only) or 'local' (f_l + f')
    cfg.lfem.token_supervision = 0.0  # weight of BCE(per-token gate score, patch visible fraction); needs tokens
    cfg.lfem.gate_grad = "all"  # which losses train the gate: 'all' (paper) or 'visibility' (only the BCE terms)
    # the gate logit reads 'relation' (paper), or adds a linear ('relation_tokens') or one-hidden-layer
    # ('relation_tokens_mlp') score of the group's patch tokens
    cfg.lfem.gate_input = "relation"


_BLOCK_KEYS = {"gate_scope": "lfem.gate_scope", "gate_input": "lfem.gate_input", "gate_grad": "lfem.gate_grad"}
_TRAINING_KEYS = {"gate_supervision": "lfem.gate_supervision", "occluder": "lfem.occluder",
                  "token_supervision": "lfem.token_supervision"}
KEYS = KeyExtension(
    project="lfem_visibility", add_keys=add_visibility_config, variant_keys={**_BLOCK_KEYS, **_TRAINING_KEYS},
    choices={"lfem.occluder": OCCLUDERS, "lfem.gate_scope": GATE_SCOPES, "lfem.gate_input": GATE_INPUTS,
             "lfem.gate_grad": GATE_GRADS})
register_keys(KEYS)
_PAPER = CN()
_PAPER.lfem = CN()
add_visibility_config(_PAPER)


def is_on(cfg: CN) -> bool:
    """Does the config turn any part of the study on (a key away from the paper's value)?"""
    return any(cfg.lfem[key] != _PAPER.lfem[key] for key in _PAPER.lfem)


def visibility_targets(cfg: CN) -> bool:
    """Does training need each view's hidden rectangle and group visibility (gate supervision or pasting)?"""
    return cfg.lfem.gate_supervision > 0 or cfg.lfem.token_supervision > 0 or cfg.lfem.occluder != "noise"


def token_geometry_kwargs(cfg: CN) -> Dict[str, Any]:
    """The patch grid and JPM grouping the model is built with (:class:`~lfem_plugin.models.visibility.TokenGeometry`
    arguments but the architecture's patch size)."""
    return dict(img_size=(cfg.data.height, cfg.data.width), stride=cfg.lfem.stride, num_groups=cfg.lfem.num_groups,
                rearrange=cfg.lfem.rearrange, shift_num=cfg.lfem.shift_num, shuffle_groups=cfg.lfem.shuffle_groups)


def block_kwargs(cfg: CN) -> Dict[str, str]:
    """:func:`~lfem_visibility.block.visibility_block` arguments."""
    return {arg: cfg.lfem[key.split(".")[1]] for arg, key in _BLOCK_KEYS.items()}


def engine_kwargs(cfg: CN) -> Dict[str, Any]:
    """:class:`~lfem_visibility.engine.VisibilityEngine`'s own arguments."""
    return {arg: cfg.lfem[key.split(".")[1]] for arg, key in _TRAINING_KEYS.items()}
