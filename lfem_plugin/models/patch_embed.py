"""Overlapping patch embedding of TransReID.

Reference: He et al., "TransReID: Transformer-based Object Re-Identification", ICCV 2021, Sec. 3.2
(https://arxiv.org/abs/2102.04378).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

__all__ = ["OverlapPatchEmbed", "patch_grid"]


def patch_grid(img_size: Tuple[int, int], patch_size: int, stride: int) -> Tuple[int, int]:
    """Token grid ``(rows, cols)`` of a ``patch_size`` convolution with ``stride`` and no padding."""
    height, width = img_size
    if height < patch_size or width < patch_size:
        raise ValueError(f"image size {img_size} is smaller than the patch size {patch_size}")
    return (height - patch_size) // stride + 1, (width - patch_size) // stride + 1


class OverlapPatchEmbed(nn.Module):
    """Image to patch tokens with a ``patch_size`` kernel and a (smaller) stride, no padding.

    Tokens are the flattened convolution map in row-major order (rows outer, columns inner). At 256x128 with
    stride 11 the grid is 22x11 = 242 tokens.

    Reference: TransReID (ICCV 2021), "overlapping patches", Sec. 3.2.

    Args:
        img_size: expected input ``(height, width)``; other sizes are rejected with a clear error.
        patch_size: convolution kernel size.
        stride: convolution stride (``patch_size`` gives the usual non-overlapping ViT patches).
        in_chans: input channels.
        embed_dim: token width.
    """

    def __init__(self, img_size: Tuple[int, int] = (256, 128), patch_size: int = 16, stride: int = 16,
                 in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        if not 0 < stride <= patch_size:
            raise ValueError(f"stride must be in [1, patch_size={patch_size}], got {stride}")
        self.img_size = tuple(img_size)
        self.patch_size = (patch_size, patch_size)
        self.stride = stride
        self.grid_size = patch_grid(self.img_size, patch_size, stride)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride)

    def size_error(self, shape: Tuple[int, ...]) -> str:
        """Why an input of ``shape`` is refused, and what to do (the position embedding is tied to the size)."""
        (h, w), got = self.img_size, "x".join(map(str, shape[-2:])) if len(shape) >= 2 else str(shape)
        return (f"expected input of shape (B, C, {h}, {w}), got {tuple(shape)}: this model is built for {h}x{w} "
                f"input and its position embedding has that size. For a checkpoint trained at {got}, build the model "
                f"at that size from the checkpoint's config: lfem_plugin.tools.inference.load_trained(CHECKPOINT) in "
                f"Python, `lfem-reid extract` on the command line (torchreid's FeatureExtractor builds the "
                f"registered {h}x{w} variant, and its loader would discard a position embedding of another size). "
                f"For a checkpoint trained at {h}x{w}, resize the images to {h}x{w} (FeatureExtractor: "
                f"image_size=({h}, {w}); config: data.height {h}, data.width {w})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(self.size_error(tuple(x.shape)))
        return self.proj(x).flatten(2).transpose(1, 2)
