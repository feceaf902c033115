"""The visibility losses: each gate (and each patch token's gate score) against what its view shows of the JPM
group (patch), from the view's own occluder.

Both score the model's view-major rows (row ``v*B + b`` is view ``v`` of image ``b``, as
:func:`~lfem_plugin.models.interface.stack_views` lays the views out) against the collate's image-major ``(B, V,
...)`` targets, put in that order by :func:`lfem_visibility.occluders.view_major`, the one change of layout.

Reference: FED (Wang et al., CVPR 2022) for occlusion scores trained against synthetic occluders; the LFEM paper
supervises no gate.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .occluders import view_major

__all__ = ["GateVisibilityLoss", "TokenVisibilityLoss"]


class TokenVisibilityLoss(nn.Module):
    """Binary cross-entropy of every view's per-patch-token gate scores against each patch's own visible fraction.

    ``mean over views v, images b, groups k, tokens j of BCEWithLogits(s[v*B + b, k, j], t[b, v, k, j])``, times
    ``weight``. The scores ``s`` are the LFEM's ``w . t_j + b`` (``gate_input='relation_tokens'``, before any
    sigmoid), whose mean over a group enters that group's gate logit; the targets come from the same view's own
    occluder through the JPM's token order (:meth:`~lfem_plugin.models.visibility.TokenGeometry.tokens_from_boxes`)
    and are reordered from image-major ``(B, V, K, n)`` to the model's view-major rows, as
    :class:`GateVisibilityLoss` does. A patch is sharper evidence than a group's mean: most patches are wholly
    visible or wholly hidden.

    Beyond the paper; per-patch occlusion scores trained against synthetic occluders follow FED (CVPR 2022).

    Args:
        weight: the loss weight (0: off).
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, token_logits: torch.Tensor, visibility: torch.Tensor) -> torch.Tensor:
        """``token_logits``: ``(V*B, K, n)``; ``visibility``: ``(B, V, K, n)`` in [0, 1]. Returns the weighted
        loss (a 0-dim tensor). Raises ``ValueError`` when ``token_logits`` is None (a model without the token-read
        gate) or its shape does not match the targets'."""
        if token_logits is None:
            raise ValueError("token supervision needs per-token gate scores: set lfem.gate_input relation_tokens "
                             "(or relation_tokens_mlp)")
        batch, num_views, groups, size = visibility.shape
        if token_logits.shape != (num_views * batch, groups, size):
            raise ValueError(f"token logits {tuple(token_logits.shape)} do not match the targets of {num_views} "
                             f"views x {batch} images x {groups} groups x {size} tokens")
        targets = view_major(visibility).reshape(num_views * batch, groups, size).to(token_logits.device)
        return self.weight * F.binary_cross_entropy_with_logits(token_logits.float(), targets.float())


class GateVisibilityLoss(nn.Module):
    """Binary cross-entropy of every view's LFEM gate logits against that view's JPM group visible fractions.

    ``mean over views v, images b, groups k of BCEWithLogits(z[v*B + b, k], t[b, v, k])``, times ``weight``. The
    gate logit ``z`` is the relation *before* the sigmoid (the model applies the sigmoid once, for the gate); the
    targets ``t`` come from the same view's own occluder (:class:`~lfem_visibility.occluders.VisibilityMultiView`)
    through the JPM's token order, and are reordered here from the collate's image-major ``(B, V, K)`` to the
    model's view-major rows.

    Beyond the paper (which supervises no gate); visibility learned from synthetic occluders follows FED (CVPR 2022).

    Args:
        weight: the loss weight (0: off, the paper).
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, gate_logits: torch.Tensor, visibility: torch.Tensor) -> torch.Tensor:
        """``gate_logits``: ``(V*B, K)``; ``visibility``: ``(B, V, K)`` in [0, 1]. Returns the weighted loss."""
        if gate_logits is None:
            raise ValueError("gate supervision needs LFEM gates, but the model has no LFEM (use_lfem False)")
        batch, num_views, groups = visibility.shape
        if gate_logits.shape != (num_views * batch, groups):
            raise ValueError(f"gate logits {tuple(gate_logits.shape)} do not match the targets of {num_views} views "
                             f"x {batch} images x {groups} groups: expected ({num_views * batch}, {groups})")
        targets = view_major(visibility).reshape(num_views * batch, groups).to(gate_logits.device)
        return self.weight * F.binary_cross_entropy_with_logits(gate_logits.float(), targets.float())
