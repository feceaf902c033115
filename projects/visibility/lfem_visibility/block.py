"""The visibility-aware LFEM block: the paper's LFEM with three switches beyond the paper (what the gate scales,
what its logit reads, which losses train it). :class:`~lfem_plugin.models.lfem.SequentialFusion` takes it as its
block (:func:`visibility_block`).

Reference: Wang, "Enhancing Global Features with Fine-Grained Local Features for Occluded Person Re-identification",
Sec. 3.3 (the LFEM); FED (Wang et al., "Feature Erasing and Diffusion Network for Occluded Person
Re-Identification", CVPR 2022) for scoring patch tokens for occlusion.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import nn

from lfem_plugin.models.lfem import LFEM, FusionBlock, LFEMOutput
from lfem_plugin.registry import LFEM_BLOCKS

__all__ = ["VisibilityLFEM", "visibility_block", "block_args", "GATE_SCOPES", "GATE_INPUTS", "GATE_GRADS"]

GATE_SCOPES = ("refined", "local")  # what the gate r scales in the fusion: f' only (paper) or the whole local
# what the gate logit reads: the relation f_l1 . f_g' (paper) or the relation plus a score of the group's patch tokens
GATE_INPUTS = ("relation", "relation_tokens", "relation_tokens_mlp")
# which losses train the gate: all of them (paper) or only the visibility losses (the fusion uses it as a constant)
GATE_GRADS = ("all", "visibility")


class VisibilityLFEM(LFEM):
    """:class:`~lfem_plugin.models.lfem.LFEM` with the visibility study's switches; with the defaults it computes
    the paper's LFEM exactly (same parameters, same initialisation, same output).

    ``gate_scope='local'``: the gate scales the whole local contribution, ``f_g + r * (f_l + f_l2 W_1) = f_g + r f_l
    + f'``, so that an occluded group (low ``r``) enters the descriptor at low weight; in the paper (``'refined'``)
    only ``f'`` is gated and ``f_l`` always enters at full weight.

    ``gate_input='relation_tokens'``: the logit adds a linear score of the group's patch tokens,
    ``r = sigmoid(s f_l1 . f_g' + mean_j (w . t_j + b))`` over the group's output patch tokens ``t_j`` from the JPM's
    local branch (:meth:`~lfem_plugin.models.jpm.JigsawPatchModule.forward_with_tokens`); the per-token scores are
    returned as ``aux`` (``(B, n)``), which :class:`~lfem_visibility.losses.TokenVisibilityLoss` can train against
    each patch's own visible fraction. The paper's gate reads only ``f_l`` and ``f_g``, which the identity losses
    train to be the same with and without an occluder; the patch tokens get no identity loss, so they can say what a
    group shows. ``w`` and ``b`` start at 0 (the gate starts as the paper's). ``'relation_tokens_mlp'`` scores ``w .
    GELU(W_t t_j + c) + b`` instead (one hidden layer of width ``D``): on a CUHK03 validation split a linear probe of
    the frozen tokens found half of what a one-hidden-layer probe found about noise-occluded patches
    (``benchmarks/visibility_probe.py``, the project's README).

    ``gate_grad='visibility'``: the fusion uses ``r`` detached, so the identity losses do not train the gate, and
    only a loss on ``logit`` / ``aux`` does. Measured on a CUHK03 validation split, the identity losses' gradient on
    the gate's token score was 6-11x the gate BCE's and 11-51x the per-token BCE's: with ``'all'`` they decide what
    the gate learns. ``f'``'s own projections still learn from the identity losses.

    Reference: LFEM paper Sec. 3.3; FED (CVPR 2022).

    Args:
        dim, proj_dim, scale_gate: as :class:`~lfem_plugin.models.lfem.LFEM`.
        gate_scope: ``'refined'`` (paper: ``r`` gates ``f'``) or ``'local'`` (``r`` gates ``f_l + f'``).
        gate_input: ``'relation'`` (paper), ``'relation_tokens'`` or ``'relation_tokens_mlp'``.
        gate_grad: ``'all'`` (paper: every loss trains the gate) or ``'visibility'`` (only the visibility losses).

    Raises:
        ValueError: a switch outside its choices; at forward, a token-read gate without ``local_tokens``.
    """

    def __init__(self, dim: int, proj_dim: Optional[int] = None, scale_gate: bool = True,
                 gate_scope: str = "refined", gate_input: str = "relation", gate_grad: str = "all") -> None:
        for key, value, choices in (("gate_scope", gate_scope, GATE_SCOPES), ("gate_input", gate_input, GATE_INPUTS),
                                    ("gate_grad", gate_grad, GATE_GRADS)):
            if value not in choices:
                raise ValueError(f"{key}={value!r} is not one of {choices}")
        super().__init__(dim, proj_dim, scale_gate)
        self.gate_scope, self.gate_input, self.gate_grad = gate_scope, gate_input, gate_grad
        self.token_score = nn.Linear(dim, 1) if gate_input != "relation" else None  # w, b
        if self.token_score is not None:
            nn.init.zeros_(self.token_score.weight)
            nn.init.zeros_(self.token_score.bias)
        # 'relation_tokens_mlp': the score reads GELU(W_t t_j + c) (one hidden layer of width D) instead of t_j
        self.token_hidden = nn.Sequential(nn.Linear(dim, dim), nn.GELU()) if gate_input == "relation_tokens_mlp" \
            else nn.Identity()

    def forward(self, local_feat: torch.Tensor, global_feat: torch.Tensor,
                local_tokens: Optional[torch.Tensor] = None) -> LFEMOutput:
        """``local_feat``, ``global_feat``: ``(B, D)``; ``local_tokens``: ``(B, n, D)`` the group's patch tokens,
        needed by ``gate_input='relation_tokens(_mlp)'`` (ValueError without it), ignored otherwise."""
        relation = self.relation(local_feat, global_feat)
        token_logits = None
        if self.token_score is not None:
            if local_tokens is None or local_tokens.dim() != 3:
                raise ValueError(f"gate_input={self.gate_input!r} needs the group's patch tokens (local_tokens, "
                                 "(B, n, D))")
            token_logits = self.token_score(self.token_hidden(local_tokens)).squeeze(-1)
            relation = relation + token_logits.mean(1)
        gate = torch.sigmoid(relation)
        weight = (gate.detach() if self.gate_grad == "visibility" else gate).unsqueeze(-1)
        refined = weight * self.proj_out(self.proj_local_value(local_feat))
        local = local_feat if self.gate_scope == "refined" else weight * local_feat
        return LFEMOutput(local + global_feat + refined, refined, gate, relation, token_logits)

    def extra_repr(self) -> str:
        return f"gate_scope={self.gate_scope!r}, gate_input={self.gate_input!r}, gate_grad={self.gate_grad!r}"


LFEM_BLOCKS.register(VisibilityLFEM, name="visibility")  # LFEMViT(lfem_block='visibility', lfem_block_args=...)


def block_args(gate_scope: str = "refined", gate_input: str = "relation", gate_grad: str = "all") -> dict:
    """``LFEMViT``'s ``lfem_block_args`` for the registered block ``'visibility'`` (plain data, stored in
    checkpoints)."""
    return {"gate_scope": gate_scope, "gate_input": gate_input, "gate_grad": gate_grad}


def visibility_block(gate_scope: str = "refined", gate_input: str = "relation", gate_grad: str = "all") -> FusionBlock:
    """The fusion block of :class:`VisibilityLFEM` with these switches (``SequentialFusion(..., block=...)``)."""
    return functools.partial(VisibilityLFEM, gate_scope=gate_scope, gate_input=gate_input, gate_grad=gate_grad)
