"""The visibility-aware LFEM's registered names (beyond the paper; docs/VISIBILITY.md): the paper's model with every
visibility part on - gates supervised by each view's group visibility (weight 1.0), occluders pasted from other
identities, JPM stripes (rearrange off, so groups can be occluded apart) and the gate scaling the whole local
(:class:`~lfem_visibility.block.VisibilityLFEM`). The ``_tokens`` names add the gate that reads the group's patch tokens
(``gate_input='relation_tokens'``) with each token's score trained against its own patch (``token_supervision``
1.0) and the gate trained by the visibility losses alone (``gate_grad='visibility'``); a name of its own, so that
torchreid's ``FeatureExtractor``, which builds a model from its name alone, builds it too. The ``_tokens_mlp`` names
score the tokens through one hidden layer (``gate_input='relation_tokens_mlp'``) and keep the paper's noise
occluders: the reading whose gate fell furthest on a validation split's noise-occluded queries.

Reference: FED (Wang et al., CVPR 2022) for visibility learned from synthetic occluders; the rest is this project's.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from lfem_plugin.models.lfem_vit import BASE_S11 as _BASE_S11, TINY as _TINY, create_lfem_vit, register_variant

from .block import block_args

__all__ = ["create_visibility_lfem_vit", "NAMES"]


def create_visibility_lfem_vit(arch: str, num_classes: int, loss: str = "softmax", pretrained: bool = False,
                               use_gpu: bool = True, gate_scope: str = "refined", gate_input: str = "relation",
                               gate_grad: str = "all", **kwargs: Any) -> nn.Module:
    """:func:`~lfem_plugin.models.lfem_vit.create_lfem_vit` with the registered block ``'visibility'``
    (:class:`~lfem_visibility.block.VisibilityLFEM`) of these switches; an explicit ``lfem_block`` /
    ``lfem_block_args`` (as the training family passes them from the config) wins."""
    kwargs.setdefault("lfem_block", "visibility")
    kwargs.setdefault("lfem_block_args", block_args(gate_scope, gate_input, gate_grad))
    return create_lfem_vit(arch, num_classes, loss, pretrained, use_gpu, **kwargs)


_VIS = dict(rearrange=False, gate_scope="local")
_VIS_TRAINING = dict(gate_supervision=1.0, occluder="paste")
_TOKENS = dict(_VIS, gate_input="relation_tokens", gate_grad="visibility")
_TOKENS_TRAINING = dict(_VIS_TRAINING, token_supervision=1.0)
_MLP = dict(_TOKENS, gate_input="relation_tokens_mlp")
_MLP_TRAINING = dict(_TOKENS_TRAINING, occluder="noise")
NAMES = ("lfem_vit_vis", "lfem_vit_vis_tiny", "lfem_vit_vis_tokens", "lfem_vit_vis_tokens_tiny",
         "lfem_vit_vis_tokens_mlp", "lfem_vit_vis_tokens_mlp_tiny")


def _register(name: str, arch: str, training: dict, **model_args: Any) -> None:
    register_variant(name, arch, training=training, create=create_visibility_lfem_vit, **model_args)


_register("lfem_vit_vis", "vit_base_patch16", training=_VIS_TRAINING, **_BASE_S11, **_VIS)
_register("lfem_vit_vis_tiny", "vit_tiny_test", training=_VIS_TRAINING, **_TINY, **_VIS)
_register("lfem_vit_vis_tokens", "vit_base_patch16", training=_TOKENS_TRAINING, **_BASE_S11, **_TOKENS)
_register("lfem_vit_vis_tokens_tiny", "vit_tiny_test", training=_TOKENS_TRAINING, **_TINY, **_TOKENS)
_register("lfem_vit_vis_tokens_mlp", "vit_base_patch16", training=_MLP_TRAINING, **_BASE_S11, **_MLP)
_register("lfem_vit_vis_tokens_mlp_tiny", "vit_tiny_test", training=_MLP_TRAINING, **_TINY, **_MLP)
