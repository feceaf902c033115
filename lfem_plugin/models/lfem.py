"""Local Feature Enhancement Module (LFEM) and the sequential local-to-global fusion.

Reference: Wang, "Enhancing Global Features with Fine-Grained Local Features for Occluded Person
Re-identification", Sec. 3.3 (Local feature enhancement module).
"""
from __future__ import annotations

import math
import functools
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from timm.layers import trunc_normal_
from torch import nn

from ..registry import LFEM_BLOCKS

__all__ = ["LFEM", "LFEMOutput", "SequentialFusion", "FusionOutput", "FusionBlock", "fusion_block"]


class LFEMOutput(NamedTuple):
    fused: torch.Tensor  # f_l + f_g + f'
    refined: torch.Tensor  # f' = r * (f_l2 W_1)
    gate: torch.Tensor  # r, shape (B,)
    logit: torch.Tensor  # the relation before the sigmoid, r = sigmoid(logit), shape (B,)
    aux: Optional[torch.Tensor] = None  # what a block beyond the paper adds per group (e.g. (B, n) token scores)


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

    The pre-sigmoid relation is returned as ``logit`` (for a with-logits loss: one sigmoid, never two). A block
    beyond the paper subclasses this one (:class:`SequentialFusion` takes the block as an argument; e.g. the
    visibility study in ``projects/visibility``).

    Reference: LFEM paper, Sec. 3.3, equations for ``f_l1, f_l2, f_g', r, f', f_final``.

    Args:
        dim: feature width ``D``.
        proj_dim: width of ``W_l1, W_l2, W_g`` outputs (``W_1`` maps it back to ``D``); ``None`` means ``D``.
        scale_gate: scale the relation dot product by ``1/sqrt(proj_dim)``.
    """

    def __init__(self, dim: int, proj_dim: Optional[int] = None, scale_gate: bool = True) -> None:
        super().__init__()
        proj_dim = proj_dim or dim
        self.proj_local_key = nn.Linear(dim, proj_dim, bias=False)  # W_l1
        self.proj_local_value = nn.Linear(dim, proj_dim, bias=False)  # W_l2
        self.proj_global = nn.Linear(dim, proj_dim, bias=False)  # W_g
        self.proj_out = nn.Linear(proj_dim, dim, bias=False)  # W_1
        self.scale = 1.0 / math.sqrt(proj_dim) if scale_gate else 1.0
        for layer in (self.proj_local_key, self.proj_local_value, self.proj_global, self.proj_out):
            trunc_normal_(layer.weight, std=0.02)

    def relation(self, local_feat: torch.Tensor, global_feat: torch.Tensor) -> torch.Tensor:
        """``s f_l1 . f_g'``, ``(B,)``: the gate before the sigmoid."""
        return (self.proj_local_key(local_feat) * self.proj_global(global_feat)).sum(dim=-1) * self.scale

    def forward(self, local_feat: torch.Tensor, global_feat: torch.Tensor,
                local_tokens: Optional[torch.Tensor] = None) -> LFEMOutput:
        """``local_feat``, ``global_feat``: ``(B, D)``. ``local_tokens`` (the group's patch tokens ``(B, n, D)``,
        which a block beyond the paper may read) is not read by the paper's LFEM."""
        logit = self.relation(local_feat, global_feat)
        gate = torch.sigmoid(logit)
        refined = gate.unsqueeze(-1) * self.proj_out(self.proj_local_value(local_feat))
        return LFEMOutput(local_feat + global_feat + refined, refined, gate, logit)


# A fusion block: called as block(dim, proj_dim, scale_gate), it returns a module with LFEM's forward.
FusionBlock = Callable[[int, Optional[int], bool], nn.Module]
LFEM_BLOCKS.register(LFEM, name="lfem")


def fusion_block(name: str = "lfem", **kwargs: Any) -> FusionBlock:
    """The fusion block registered as ``name`` (:data:`lfem_plugin.registry.LFEM_BLOCKS`) with its own ``kwargs``.
    Raises ``KeyError`` listing the registered names (a research project's block exists once it is imported)."""
    if name not in LFEM_BLOCKS:
        raise KeyError(f"no LFEM block named {name!r}; registered: {list(LFEM_BLOCKS)} (a research project's block "
                       f"exists once the project is imported, e.g. `import lfem_visibility`)")
    block = LFEM_BLOCKS.get(name)
    return functools.partial(block, **kwargs) if kwargs else block


class FusionOutput(NamedTuple):
    final: torch.Tensor  # g_K, the enhanced global descriptor f_final
    stages: Tuple[torch.Tensor, ...]  # g_1 .. g_K
    refined: Tuple[torch.Tensor, ...]  # f'_1 .. f'_K
    gates: torch.Tensor  # (B, K)
    logits: torch.Tensor  # (B, K) the gates before the sigmoid
    aux: Optional[torch.Tensor] = None  # (B, K, ...) the blocks' aux outputs stacked, None for the paper's LFEM


class SequentialFusion(nn.Module):
    """``g_0 = f_g``; ``g_k = LFEM_k(f_l^(k), g_{k-1})`` for k = 1..K; ``f_final = g_K``.

    Reference: LFEM paper, Sec. 3.1 and 3.3 ("integrated sequentially into the global feature").

    Args:
        dim: feature width.
        num_groups: number of local groups ``K``.
        share: one LFEM shared by all groups instead of one per group (the paper's default is one per group).
        proj_dim: see :class:`LFEM`.
        scale_gate: see :class:`LFEM`.
        block: the module of each step, ``block(dim, proj_dim, scale_gate)`` (default :class:`LFEM`, the paper's).
    """

    def __init__(self, dim: int, num_groups: int = 4, share: bool = False, proj_dim: Optional[int] = None,
                 scale_gate: bool = True, block: FusionBlock = LFEM) -> None:
        super().__init__()
        count = 1 if share else num_groups
        self.lfems = nn.ModuleList(block(dim, proj_dim, scale_gate) for _ in range(count))
        self.num_groups = num_groups

    def forward(self, global_feat: torch.Tensor, local_feats: Sequence[torch.Tensor],
                local_tokens: Sequence[torch.Tensor] = ()) -> FusionOutput:
        """``global_feat``: ``(B, D)``; ``local_feats``: ``K`` tensors ``(B, D)``; ``local_tokens``: each group's patch
        tokens ``(B, n, D)`` (for a block that reads them), or empty. Raises ``ValueError`` when the number of
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
        aux: List[torch.Tensor] = []
        for k, local in enumerate(local_feats):
            out = self.lfems[k % len(self.lfems)](local, current, local_tokens[k] if local_tokens else None)
            current = out.fused
            stages.append(out.fused)
            refined.append(out.refined)
            gates.append(out.gate)
            logits.append(out.logit)
            if out.aux is not None:
                aux.append(out.aux)
        return FusionOutput(current, tuple(stages), tuple(refined), torch.stack(gates, dim=1),
                            torch.stack(logits, dim=1), torch.stack(aux, dim=1) if aux else None)
