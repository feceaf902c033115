"""The visibility study's training family: what ``lfem-reid train`` builds for its names (``lfem_vit_vis*``) and for
any plugin config that turns one of its keys on - views that know what they hide, the visibility-aware LFEM block,
:class:`~lfem_visibility.engine.VisibilityEngine` and the checks of its keys.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from yacs.config import CfgNode

from lfem_plugin import config as C
from lfem_plugin.models.backbones import ARCHS
from lfem_plugin.models.visibility import TokenGeometry
from lfem_plugin.registry import MODELS
from lfem_plugin.tools.preflight import PreflightError
from lfem_plugin.tools.train import PluginFamily, register_family

from .block import block_args
from .config import block_kwargs, engine_kwargs, is_on, token_geometry_kwargs, visibility_targets
from .engine import VisibilityEngine
from .models import NAMES
from .occluders import build_visibility_transform

__all__ = ["VisibilityFamily", "select", "token_geometry"]

_logger = logging.getLogger(__name__)


def token_geometry(cfg: CfgNode) -> TokenGeometry:
    """The patch grid and JPM grouping of the configured plugin model (the patch size is its architecture's)."""
    return TokenGeometry(patch_size=ARCHS[MODELS.get(cfg.model.name).arch]["patch_size"], **token_geometry_kwargs(cfg))


class VisibilityFamily(PluginFamily):
    """:class:`~lfem_plugin.tools.train.PluginFamily` with the study's transform, block, engine and checks."""

    engine_class = VisibilityEngine

    def check_config(self, cfg: CfgNode) -> None:
        """The study's keys (lfem.gate_supervision, lfem.token_supervision, lfem.gate_input, lfem.gate_grad)."""
        if cfg.lfem.gate_supervision < 0:
            raise PreflightError(f"lfem.gate_supervision is {cfg.lfem.gate_supervision}; use 0 (off, the paper) or "
                                 f"a positive weight")
        if cfg.lfem.token_supervision < 0:
            raise PreflightError(f"lfem.token_supervision is {cfg.lfem.token_supervision}; use 0 (off) or a "
                                 f"positive weight")
        if cfg.lfem.token_supervision > 0 and cfg.lfem.gate_input == "relation":
            raise PreflightError("lfem.token_supervision > 0 trains the gate's per-token scores, which only "
                                 "lfem.gate_input relation_tokens or relation_tokens_mlp has: set lfem.gate_input to "
                                 "one of them (or use an lfem_vit_vis_tokens* model name), or lfem.token_supervision 0")
        if cfg.lfem.gate_grad == "visibility" and cfg.lfem.gate_supervision <= 0:
            raise PreflightError("lfem.gate_grad visibility leaves the gate to the visibility losses, but "
                                 "lfem.gate_supervision is 0: the gate would never train (and DDP would find unused "
                                 "parameters); set lfem.gate_supervision > 0 or lfem.gate_grad all")
        if (cfg.lfem.gate_supervision > 0 or cfg.lfem.token_supervision > 0) and not cfg.lfem.use_lfem:
            raise PreflightError("lfem.gate_supervision / lfem.token_supervision > 0 supervise the LFEM gates, but "
                                 "lfem.use_lfem is false (no gates); set lfem.use_lfem true or both weights to 0")
        if visibility_targets(cfg) and not {"original", "erased"} & set(cfg.lfem.views):
            _logger.warning("lfem.gate_supervision / a pasting lfem.occluder: no view in lfem.views %s erases "
                            "(original, erased), so every target is 1 and nothing is pasted", list(cfg.lfem.views))

    def train_transform(self, cfg: CfgNode):
        """With gate supervision or pasted occluders the train views also give their hidden rectangles and group
        visibility targets, in the configured model's patch grid and JPM order."""
        if not visibility_targets(cfg):
            return super().train_transform(cfg)
        return build_visibility_transform(token_geometry(cfg), **C.transform_kwargs(cfg))

    def model_extras(self, cfg: CfgNode) -> Dict[str, Any]:
        return {"lfem_block": "visibility", "lfem_block_args": block_args(**block_kwargs(cfg))}

    def engine_kwargs(self, cfg: CfgNode) -> Dict[str, Any]:
        return dict(super().engine_kwargs(cfg), **engine_kwargs(cfg))

    def build_engine(self, cfg: CfgNode, dm, model, use_gpu: bool):
        if visibility_targets(cfg):  # the targets must be computed in the built model's own patch grid and order
            targets, built = dm.transform_tr.geometry, model.token_geometry()
            if targets != built:
                raise ValueError(f"the train views' visibility targets use {targets} but the model has {built}; "
                                 f"build the data manager and the model from the same config")
        return super().build_engine(cfg, dm, model, use_gpu)


def select(cfg: CfgNode) -> Optional[VisibilityFamily]:
    """The study's family for its names and for plugin models with one of its keys on; None otherwise."""
    if cfg.model.name in NAMES or (cfg.model.name in MODELS and is_on(cfg)):
        return VisibilityFamily()
    return None


register_family(select)
