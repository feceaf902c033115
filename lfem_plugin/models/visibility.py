"""What each JPM group of an image can see: visible fractions from a known occluder's pixel mask.

Given the pixels an occluder hides (a box or a mask), this module turns them into one number per JPM group: the
mean, over the group's patches, of the visible share of each patch's pixels (a patch counts in proportion to its
visible pixel area). The patches are those of the overlapping patch embedding (``patch_size`` kernel, ``stride``, no
padding), and the groups are formed by the *same* token permutation the JPM applies
(:func:`~lfem_plugin.models.jpm.rearrange_tokens`: shift + shuffle when ``rearrange`` is true, consecutive row-major
tokens - horizontal stripes - when false), so a group's target and its gate always come from the same tokens.

What the gates see, as geometry: ``lfem-reid analyze-gates`` reads each gate against the share of its group that a
known occluder hides (:mod:`lfem_plugin.tools.gate_analysis`), and a research project may train against the same
numbers (``projects/visibility``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .jpm import rearrange_tokens
from .patch_embed import patch_grid

__all__ = ["TokenGeometry", "box_mask", "group_visibility", "grouped_patch_visibility", "patch_visibility"]

Box = tuple[int, int, int, int]  # top, left, height, width in pixels of the model's input


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Visible-pixel masks ``(..., H, W)`` (1 visible, 0 hidden) of rectangles ``boxes`` ``(..., 4)`` =
    ``(top, left, height, width)``; a box of zero height or width hides nothing."""
    boxes = torch.as_tensor(boxes)
    top, left, h, w = (boxes[..., i, None] for i in range(4))
    ys = torch.arange(height, device=boxes.device)
    xs = torch.arange(width, device=boxes.device)
    rows = (ys >= top) & (ys < top + h)  # (..., H)
    cols = (xs >= left) & (xs < left + w)  # (..., W)
    return 1.0 - (rows.unsqueeze(-1) & cols.unsqueeze(-2)).float()


def patch_visibility(mask: torch.Tensor, patch_size: int, stride: int) -> torch.Tensor:
    """Visible area fraction of every patch, row-major: ``mask`` ``(B, H, W)`` in [0, 1] -> ``(B, N)``.

    The patch at grid cell ``(r, c)`` covers pixels ``[r*stride, r*stride + patch_size)`` x
    ``[c*stride, c*stride + patch_size)``, as the patch embedding's convolution (no padding) sees them.
    """
    if mask.dim() != 3:
        raise ValueError(f"mask must be (B, H, W), got shape {tuple(mask.shape)}")
    mask = mask if mask.is_floating_point() else mask.float()  # float64 masks (gate analysis) stay float64
    return F.avg_pool2d(mask.unsqueeze(1), patch_size, stride).flatten(1)


def grouped_patch_visibility(patch_vis: torch.Tensor, num_groups: int, rearrange: bool, shift_num: int = 5,
                             shuffle_groups: int = 2) -> torch.Tensor:
    """Per-patch visible fractions in the JPM's groups: ``patch_vis`` ``(B, N)`` row-major -> ``(B, num_groups,
    N // num_groups)``, element ``[b, k, j]`` the ``j``-th token of group ``k`` as the JPM orders it.

    The per-patch values go through :func:`~lfem_plugin.models.jpm.rearrange_tokens` - the function the JPM applies
    to its tokens - and are then cut into ``num_groups`` runs of ``N // num_groups``, exactly as
    :class:`~lfem_plugin.models.jpm.JigsawPatchModule` cuts them (leftover tokens belong to no group).
    """
    size = patch_vis.shape[1] // num_groups
    tokens = patch_vis.unsqueeze(-1)
    if rearrange:
        tokens = rearrange_tokens(tokens, shift_num, shuffle_groups)
    return tokens[:, :size * num_groups, 0].reshape(patch_vis.shape[0], num_groups, size)


def group_visibility(patch_vis: torch.Tensor, num_groups: int, rearrange: bool, shift_num: int = 5,
                     shuffle_groups: int = 2) -> torch.Tensor:
    """Mean visible fraction of each JPM group: ``patch_vis`` ``(B, N)`` row-major -> ``(B, num_groups)``, the mean
    over each group's tokens of :func:`grouped_patch_visibility`."""
    return grouped_patch_visibility(patch_vis, num_groups, rearrange, shift_num, shuffle_groups).mean(-1)


@dataclass(frozen=True)
class TokenGeometry:
    """The patch grid and JPM grouping of a model: everything needed to turn a pixel mask into group targets.

    Args:
        img_size: the model's input ``(height, width)``.
        patch_size: patch kernel size.
        stride: patch stride.
        num_groups: JPM groups ``K``.
        rearrange: JPM shift + shuffle (False: horizontal stripes of consecutive row-major tokens).
        shift_num: JPM shift (TransReID convention).
        shuffle_groups: JPM shuffle chunks.
    """

    img_size: tuple[int, int]
    patch_size: int
    stride: int
    num_groups: int
    rearrange: bool
    shift_num: int = 5
    shuffle_groups: int = 2

    def __post_init__(self) -> None:
        patch_grid(self.img_size, self.patch_size, self.stride)  # raises on an image smaller than a patch

    @classmethod
    def of(cls, backbone) -> TokenGeometry:
        """The geometry of a :class:`~lfem_plugin.models.vit.TransReIDViT` built with JPM."""
        embed, jpm = backbone.patch_embed, backbone.jpm
        if jpm is None:
            raise ValueError("the backbone has no JPM: there are no groups to give visibility targets")
        return cls(tuple(embed.img_size), embed.patch_size[0], embed.stride, jpm.num_groups, jpm.rearrange,
                   jpm.shift_num, jpm.shuffle_groups)

    def tokens_from_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Per-token visible fractions ``(B, K, N // K)`` of visible-pixel masks ``(B, H, W)`` at the model's input
        size, each group's tokens in the JPM's order (:func:`grouped_patch_visibility`); ValueError for a mask of
        another size."""
        if tuple(mask.shape[-2:]) != tuple(self.img_size):
            raise ValueError(f"mask of size {tuple(mask.shape[-2:])} for a model input of {tuple(self.img_size)}")
        return grouped_patch_visibility(patch_visibility(mask, self.patch_size, self.stride), self.num_groups,
                                        self.rearrange, self.shift_num, self.shuffle_groups)

    def from_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Group visible fractions ``(B, K)`` of visible-pixel masks ``(B, H, W)`` at the model's input size: the
        mean over each group's tokens of :meth:`tokens_from_mask`."""
        return self.tokens_from_mask(mask).mean(-1)

    def tokens_from_boxes(self, boxes: Sequence[Box] | torch.Tensor) -> torch.Tensor:
        """Per-token visible fractions ``(B, K, N // K)`` of hidden rectangles ``(B, 4)`` (``top, left, height,
        width`` in pixels of the model's input), each group's tokens in the JPM's order."""
        return self.tokens_from_mask(box_mask(torch.as_tensor(boxes).reshape(-1, 4), *self.img_size))

    def from_boxes(self, boxes: Sequence[Box] | torch.Tensor) -> torch.Tensor:
        """Group visible fractions ``(B, K)`` of hidden rectangles ``(B, 4)`` (``top, left, height, width``)."""
        return self.from_mask(box_mask(torch.as_tensor(boxes).reshape(-1, 4), *self.img_size))
