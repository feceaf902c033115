"""The visibility-aware LFEM's registered names (beyond the paper; docs/VISIBILITY.md): the paper's model with every
visibility part on - gates supervised by each view's group visibility (weight 1.0), occluders pasted from other
identities, JPM stripes (rearrange off, so groups can be occluded apart) and the gate scaling the whole local
(:class:`~lfem_plugin.models.lfem.LFEM`). The ``_tokens`` names add the gate that reads the group's patch tokens
(``gate_input='relation_tokens'``) with each token's score trained against its own patch (``token_supervision``
1.0) and the gate trained by the visibility losses alone (``gate_grad='visibility'``); a name of its own, so that
torchreid's ``FeatureExtractor``, which builds a model from its name alone, builds it too. The ``_tokens_mlp`` names
score the tokens through one hidden layer (``gate_input='relation_tokens_mlp'``) and keep the paper's noise
occluders: the reading whose gate fell furthest on a validation split's noise-occluded queries.

Reference: FED (Wang et al., CVPR 2022) for visibility learned from synthetic occluders; the rest is this project's.
"""
from __future__ import annotations

from .lfem_vit import _BASE_S11, _TINY, _variant

_VIS = dict(rearrange=False, gate_scope="local")
_VIS_TRAINING = dict(gate_supervision=1.0, occluder="paste")
_TOKENS = dict(_VIS, gate_input="relation_tokens", gate_grad="visibility")
_TOKENS_TRAINING = dict(_VIS_TRAINING, token_supervision=1.0)
_MLP = dict(_TOKENS, gate_input="relation_tokens_mlp")
_MLP_TRAINING = dict(_TOKENS_TRAINING, occluder="noise")
_variant("lfem_vit_vis", "vit_base_patch16", training=_VIS_TRAINING, **_BASE_S11, **_VIS)
_variant("lfem_vit_vis_tiny", "vit_tiny_test", training=_VIS_TRAINING, **_TINY, **_VIS)
_variant("lfem_vit_vis_tokens", "vit_base_patch16", training=_TOKENS_TRAINING, **_BASE_S11, **_TOKENS)
_variant("lfem_vit_vis_tokens_tiny", "vit_tiny_test", training=_TOKENS_TRAINING, **_TINY, **_TOKENS)
_variant("lfem_vit_vis_tokens_mlp", "vit_base_patch16", training=_MLP_TRAINING, **_BASE_S11, **_MLP)
_variant("lfem_vit_vis_tokens_mlp_tiny", "vit_tiny_test", training=_MLP_TRAINING, **_TINY, **_MLP)
