"""Local Feature Enhancement Module (LFEM) and the sequential local-to-global fusion.

Reference: Wang, "Enhancing Global Features with Fine-Grained Local Features for Occluded Person
Re-identification", Sec. 3.3 (Local feature enhancement module).
"""
from __future__ import annotations

import math
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from timm.layers import trunc_normal_
from torch import nn

__all__ = ["LFEM", "LFEMOutput", "SequentialFusion", "FusionOutput", "GATE_SCOPES", "GATE_INPUTS", "GATE_GRADS"]


GATE_SCOPES = ("refined", "local")  # what the gate r scales in the fusion: f' only (paper) or the whole local
# what the gate logit reads: the relation f_l1 . f_g' (paper) or the relation plus a score of the group's patch tokens
GATE_INPUTS = ("relation", "relation_tokens", "relation_tokens_mlp")
# which losses train the gate: all of them (paper) or only the visibility losses (the fusion uses it as a constant)
GATE_GRADS = ("all", "visibility")


class LFEMOutput(NamedTuple):
    fused: torch.Tensor  # f_l + f_g + f' ('refined' scope) or f_g + r f_l + f' ('local' scope)
    refined: torch.Tensor  # f' = r * (f_l2 W_1)
    gate: torch.Tensor  # r, shape (B,)
    logit: torch.Tensor  # the relation before the sigmoid, r = sigmoid(logit), shape (B,)
    token_logits: Optional[torch.Tensor] = None  # (B, n) w . t_j + b per patch token ('relation_tokens'), else None


class LFEM(nn.Module):
    """Gate a local feature by its relation to the global one and add it to the global feature.

    ``f_l1 = f_l W_l1``, ``f_l2 = f_l W_l2``, ``f_g' = f_g W_g``; ``r = sigmoid(f_l1 . f_g' * s)``;
    ``f' = r * (f_l2 W_1)``; output ``f_l + f_g + f'``.

    Readings chosen where the paper is silent (each a constructor argument):
      * the "Conv1x1 projections" on a D-dim vector are bias-free linear maps (the paper writes matrices);
      * projection width ``proj_dim`` defaults to ``D`` (a 1x1 conv that keeps the channel count);
      * ``scale_gate=True`` multiplies the dot product by ``s = 1/sqrt(proj_dim)``, as in scaled dot-product
        attention; the unscaled product of two ``D``-dim projections has a standard deviation of order
        ``sqrt(D)`` times the per-dimension scale and saturates the sigmoid at initialisation, which stops the
        gate from learning (see the test ``test_gate_not_saturated_at_init``).

    Beyond the paper (``gate_scope='local'``): the gate scales the whole local contribution,
    ``f_g + r * (f_l + f_l2 W_1) = f_g + r f_l + f'``, so that an occluded group (low ``r``) enters the descriptor
    at low weight; in the paper (``'refined'``, the default) only ``f'`` is gated and ``f_l`` always enters at full
    weight. The pre-sigmoid relation is returned as ``logit`` for a with-logits loss (one sigmoid, never two).

    Beyond the paper (``gate_input='relation_tokens'``): the logit adds a linear score of the group's patch tokens,
    ``r = sigmoid(s f_l1 . f_g' + mean_j (w . t_j + b))`` over the group's output patch tokens ``t_j`` from the
    JPM's local branch (:meth:`~lfem_plugin.models.jpm.JigsawPatchModule.forward_with_tokens`); the per-token scores
    are returned as ``token_logits``, which :class:`~lfem_plugin.losses.TokenVisibilityLoss` can train against each
    patch's own visible fraction. The paper's gate reads only ``f_l`` and ``f_g``, which the identity losses train
    to be the same with and without an occluder; the patch tokens get no identity loss, so they can say what a group
    shows. ``w`` and ``b`` start at 0 (the gate starts as the paper's). Scoring patch tokens for occlusion follows
    FED's Occlusion Erasing Module (Wang et al., CVPR 2022). ``gate_input='relation_tokens_mlp'`` scores
    ``w . GELU(W_t t_j + c) + b`` instead (one hidden layer of width ``D``; this project's choice): on a CUHK03
    validation split a linear probe of the frozen tokens found half of what a one-hidden-layer probe found about
    noise-occluded patches (``benchmarks/visibility_probe.py``, docs/VISIBILITY.md).

    Beyond the paper (``gate_grad='visibility'``): the fusion uses ``r`` detached, so the identity losses do not train
    the gate, and only a loss on ``logit`` / ``token_logits`` does (:class:`~lfem_plugin.losses.GateVisibilityLoss`,
    :class:`~lfem_plugin.losses.TokenVisibilityLoss`). Measured on a CUHK03 validation split, the identity losses'
    gradient on the gate's token score was 6-11x the gate BCE's and 11-51x the per-token BCE's
    (docs/VISIBILITY.md): with ``'all'`` they decide what the gate learns. ``f'``'s own projections still learn from
    the identity losses.

    Reference: LFEM paper, Sec. 3.3, equations for ``f_l1, f_l2, f_g', r, f', f_final``.

    Args:
        dim: feature width ``D``.
        proj_dim: width of ``W_l1, W_l2, W_g`` outputs (``W_1`` maps it back to ``D``); ``None`` means ``D``.
        scale_gate: scale the relation dot product by ``1/sqrt(proj_dim)``.
        gate_scope: ``'refined'`` (paper: ``r`` gates ``f'``) or ``'local'`` (``r`` gates ``f_l + f'``).
        gate_input: ``'relation'`` (paper), ``'relation_tokens'`` (plus a linear score of the group's patch tokens)
            or ``'relation_tokens_mlp'`` (plus a one-hidden-layer score of them).
        gate_grad: ``'all'`` (paper: every loss trains the gate) or ``'visibility'`` (only the visibility losses).
    """

    def __init__(self, dim: int, proj_dim: Optional[int] = None, scale_gate: bool = True,
                 gate_scope: str = "refined", gate_input: str = "relation", gate_grad: str = "all") -> None:
        super().__init__()
        if gate_scope not in GATE_SCOPES:
            raise ValueError(f"gate_scope={gate_scope!r} is not one of {GATE_SCOPES}")
        if gate_input not in GATE_INPUTS:
            raise ValueError(f"gate_input={gate_input!r} is not one of {GATE_INPUTS}")
        if gate_grad not in GATE_GRADS:
            raise ValueError(f"gate_grad={gate_grad!r} is not one of {GATE_GRADS}")
        self.gate_scope = gate_scope
        self.gate_input = gate_input
        self.gate_grad = gate_grad
        proj_dim = proj_dim or dim
        self.proj_local_key = nn.Linear(dim, proj_dim, bias=False)  # W_l1
        self.proj_local_value = nn.Linear(dim, proj_dim, bias=False)  # W_l2
        self.proj_global = nn.Linear(dim, proj_dim, bias=False)  # W_g
        self.proj_out = nn.Linear(proj_dim, dim, bias=False)  # W_1
        self.scale = 1.0 / math.sqrt(proj_dim) if scale_gate else 1.0
        for layer in (self.proj_local_key, self.proj_local_value, self.proj_global, self.proj_out):
            trunc_normal_(layer.weight, std=0.02)
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
        relation = (self.proj_local_key(local_feat) * self.proj_global(global_feat)).sum(dim=-1) * self.scale
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


class FusionOutput(NamedTuple):
    final: torch.Tensor  # g_K, the enhanced global descriptor f_final
    stages: Tuple[torch.Tensor, ...]  # g_1 .. g_K
    refined: Tuple[torch.Tensor, ...]  # f'_1 .. f'_K
    gates: torch.Tensor  # (B, K)
    logits: torch.Tensor  # (B, K) the gates before the sigmoid
    token_logits: Optional[torch.Tensor] = None  # (B, K, n) per-token scores ('relation_tokens'), else None


class SequentialFusion(nn.Module):
    """``g_0 = f_g``; ``g_k = LFEM_k(f_l^(k), g_{k-1})`` for k = 1..K; ``f_final = g_K``.

    Reference: LFEM paper, Sec. 3.1 and 3.3 ("integrated sequentially into the global feature").

    Args:
        dim: feature width.
        num_groups: number of local groups ``K``.
        share: one LFEM shared by all groups instead of one per group (the paper's default is one per group).
        proj_dim: see :class:`LFEM`.
        scale_gate: see :class:`LFEM`.
        gate_scope: see :class:`LFEM`.
        gate_input: see :class:`LFEM`.
        gate_grad: see :class:`LFEM`.
    """

    def __init__(self, dim: int, num_groups: int = 4, share: bool = False, proj_dim: Optional[int] = None,
                 scale_gate: bool = True, gate_scope: str = "refined", gate_input: str = "relation",
                 gate_grad: str = "all") -> None:
        super().__init__()
        count = 1 if share else num_groups
        self.lfems = nn.ModuleList(LFEM(dim, proj_dim, scale_gate, gate_scope, gate_input, gate_grad)
                                   for _ in range(count))
        self.num_groups = num_groups

    def forward(self, global_feat: torch.Tensor, local_feats: Sequence[torch.Tensor],
                local_tokens: Sequence[torch.Tensor] = ()) -> FusionOutput:
        """``global_feat``: ``(B, D)``; ``local_feats``: ``K`` tensors ``(B, D)``; ``local_tokens``: each group's patch
        tokens ``(B, n, D)`` (``gate_input='relation_tokens'``), or empty. Raises ``ValueError`` when the number of
        locals or of token groups is not ``K``."""
        if len(local_feats) != self.num_groups:
            raise ValueError(f"expected {self.num_groups} local features, got {len(local_feats)}")
        if local_tokens and len(local_tokens) != self.num_groups:
            raise ValueError(f"expected {self.num_groups} groups of local tokens, got {len(local_tokens)}")
        current = global_feat
        stages: List[torch.Tensor] = []
        refined: List[torch.Tensor] = []
        gates: List[torch.Tensor] = []
        logits: List[torch.Tensor] = []
        token_logits: List[torch.Tensor] = []
        for k, local in enumerate(local_feats):
            out = self.lfems[k % len(self.lfems)](local, current, local_tokens[k] if local_tokens else None)
            current = out.fused
            stages.append(out.fused)
            refined.append(out.refined)
            gates.append(out.gate)
            logits.append(out.logit)
            if out.token_logits is not None:
                token_logits.append(out.token_logits)
        return FusionOutput(current, tuple(stages), tuple(refined), torch.stack(gates, dim=1),
                            torch.stack(logits, dim=1), torch.stack(token_logits, dim=1) if token_logits else None)
