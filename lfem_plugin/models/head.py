"""BNNeck + bias-free classifier, one per supervised branch.

Reference: Luo et al., "Bag of Tricks and A Strong Baseline for Deep Person Re-identification", CVPRW 2019
(BNNeck); TransReID (ICCV 2021) uses the same head with a frozen BN bias.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

__all__ = ["BNNeckHead"]


class BNNeckHead(nn.Module):
    """``BatchNorm1d`` with a frozen zero bias, then a bias-free linear classifier.

    The BN bias is stored as a *buffer*, not a parameter: it stays in the state dict (``bn.bias``) but no
    optimiser or torchreid's ``open_all_layers`` (which sets ``requires_grad=True`` on every parameter each
    epoch) can ever unfreeze it.

    Reference: BNNeck (Luo et al., CVPRW 2019).

    Args:
        dim: feature width.
        num_classes: number of training identities.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        nn.init.ones_(self.bn.weight)
        del self.bn.bias
        self.bn.register_buffer("bias", torch.zeros(dim))
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, feat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(bn_feat, logits)``."""
        bn_feat = self.bn(feat)
        return bn_feat, self.classifier(bn_feat)
