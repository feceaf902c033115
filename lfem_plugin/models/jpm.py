"""Jigsaw Patch Module (JPM) of TransReID: shift + shuffle of patch tokens, then shared local branches.

Reference: TransReID (ICCV 2021), Sec. 3.4 "Jigsaw Patch Module".
"""
from __future__ import annotations

import copy
from typing import List, Tuple

import torch
from torch import nn

__all__ = ["rearrange_tokens", "group_token_indices", "Branch", "JigsawPatchModule"]


def rearrange_tokens(patches: torch.Tensor, shift_num: int = 5, shuffle_groups: int = 2) -> torch.Tensor:
    """Shift then shuffle patch tokens ``(B, N, D)`` as TransReID's ``shuffle_unit`` does.

    Shift follows TransReID's convention: the sequence is rotated to start at token *position* ``shift_num``
    counted with the cls token at position 0, i.e. at patch index ``shift_num - 1`` (``shift_num=5`` rotates by
    4 patches). Shuffle views the rotated sequence as ``shuffle_groups`` contiguous chunks and interleaves them
    (G=2: ``r[0], r[N/2], r[1], r[N/2+1], ...``). When ``N`` is not divisible by ``G``, one copy of the
    second-to-last rotated token is appended first, as in TransReID.
    """
    rotate = shift_num - 1
    if rotate > 0:
        patches = torch.cat([patches[:, rotate:], patches[:, :rotate]], dim=1)
    if shuffle_groups <= 1:
        return patches
    if patches.shape[1] % shuffle_groups:
        patches = torch.cat([patches, patches[:, -2:-1]], dim=1)
    batch, num, dim = patches.shape
    return patches.view(batch, shuffle_groups, num // shuffle_groups, dim).transpose(1, 2).reshape(batch, num, dim)


def group_token_indices(num_patches: int, num_groups: int = 4, rearrange: bool = True, shift_num: int = 5,
                        shuffle_groups: int = 2) -> List[List[int]]:
    """Patch indices (row-major, 0-based) that land in each JPM group; leftover tokens are in no group."""
    ids = torch.arange(num_patches, dtype=torch.float32).view(1, -1, 1)
    if rearrange:
        ids = rearrange_tokens(ids, shift_num, shuffle_groups)
    size = num_patches // num_groups
    return [ids[0, k * size:(k + 1) * size, 0].long().tolist() for k in range(num_groups)]


class Branch(nn.Module):
    """One transformer block followed by a LayerNorm; the output is the token at position 0."""

    def __init__(self, block: nn.Module, norm: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.norm = norm

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(self.block(tokens))[:, 0]

    def forward_tokens(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The token at position 0 (as :meth:`forward`), ``(B, D)``, and the other output tokens, ``(B, N, D)``."""
        out = self.norm(self.block(tokens))
        return out[:, 0], out[:, 1:]


class JigsawPatchModule(nn.Module):
    """Global branch over all tokens plus one local branch shared by ``num_groups`` rearranged patch groups.

    Both branches start as copies of the backbone's last block and final norm (the checkpoint filter copies the
    pretrained last block into both). Patch groups hold ``N // num_groups`` consecutive rearranged tokens each,
    prefixed with the cls token; tokens past ``num_groups * (N // num_groups)`` are unused, as in TransReID.

    Reference: TransReID (ICCV 2021), Sec. 3.4.

    Args:
        block: the last transformer block (copied twice).
        norm: the final norm layer (copied twice).
        num_groups: number of local groups ``k``.
        rearrange: apply shift + shuffle before grouping.
        shift_num: shift of the rearrangement (TransReID convention, see :func:`rearrange_tokens`).
        shuffle_groups: number of chunks interleaved by the shuffle.
    """

    def __init__(self, block: nn.Module, norm: nn.Module, num_groups: int = 4, rearrange: bool = True,
                 shift_num: int = 5, shuffle_groups: int = 2) -> None:
        super().__init__()
        if num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        self.global_branch = Branch(copy.deepcopy(block), copy.deepcopy(norm))
        self.local_branch = Branch(copy.deepcopy(block), copy.deepcopy(norm))
        self.num_groups = num_groups
        self.rearrange = rearrange
        self.shift_num = shift_num
        self.shuffle_groups = shuffle_groups

    def forward(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """``tokens``: ``(B, 1 + N, D)`` after the trunk. Returns the global feature and ``num_groups`` locals."""
        global_feat, local_feats, _ = self.forward_with_tokens(tokens)
        return global_feat, local_feats

    def forward_with_tokens(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...],
                                                                 Tuple[torch.Tensor, ...]]:
        """As :meth:`forward`, plus each group's *patch tokens* out of the local branch, in the group's (JPM) order:
        ``num_groups`` tensors ``(B, N // num_groups, D)``. TransReID keeps only the cls position; the patch positions
        are computed by the same block anyway and receive no identity loss (a fusion block beyond the paper may read
        them: :class:`~lfem_plugin.models.lfem.SequentialFusion`'s ``local_tokens``)."""
        global_feat = self.global_branch(tokens)
        cls_token, patches = tokens[:, :1], tokens[:, 1:]
        size = patches.shape[1] // self.num_groups
        if self.rearrange:
            patches = rearrange_tokens(patches, self.shift_num, self.shuffle_groups)
        # All groups go through the shared branch in one batched call: (G*B, 1 + size, D).
        groups = patches[:, :size * self.num_groups].reshape(patches.shape[0], self.num_groups, size, -1)
        groups = torch.cat([cls_token.unsqueeze(1).expand(-1, self.num_groups, -1, -1), groups], dim=2)
        local, group_tokens = self.local_branch.forward_tokens(groups.transpose(0, 1).flatten(0, 1))
        batch = patches.shape[0]
        return (global_feat, tuple(local.view(self.num_groups, batch, -1).unbind(0)),
                tuple(group_tokens.view(self.num_groups, batch, size, -1).unbind(0)))

    def extra_repr(self) -> str:
        return (f"num_groups={self.num_groups}, rearrange={self.rearrange}, shift_num={self.shift_num}, "
                f"shuffle_groups={self.shuffle_groups}")
