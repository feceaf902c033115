"""TransReID ViT backbone on timm blocks: overlapping patches, camera SIE and the Jigsaw Patch Module.

Reference: He et al., "TransReID: Transformer-based Object Re-Identification", ICCV 2021
(https://arxiv.org/abs/2102.04378).
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from .jpm import JigsawPatchModule, group_token_indices
from .patch_embed import OverlapPatchEmbed
from .sie import CameraEmbedding

__all__ = ["BackboneOutput", "TransReIDViT"]


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


class BackboneOutput(NamedTuple):
    """What the backbone gives the heads: a global feature and (with JPM) one feature per local group, and each
    group's patch tokens out of the JPM's local branch (``(B, N // K, D)`` each, JPM order; empty without JPM)."""

    global_feat: torch.Tensor
    local_feats: Tuple[torch.Tensor, ...]
    local_tokens: Tuple[torch.Tensor, ...] = ()


class TransReIDViT(nn.Module):
    """ViT with overlapping patch embedding, camera SIE and an optional Jigsaw Patch Module.

    With ``jpm=True`` the trunk runs all blocks but the last and the JPM holds two copies of (last block, final
    norm): a global branch over all tokens and a local branch shared by ``num_groups`` patch groups. The trunk's
    own last block is not built at all (it would receive no gradient and need DDP's ``find_unused_parameters``).
    With ``jpm=False`` it is a plain ViT returning the normed cls token and no locals.

    Reference: TransReID (ICCV 2021), Sec. 3.2-3.4.

    Args:
        img_size: input ``(height, width)``.
        patch_size: patch kernel size.
        stride: patch stride (11 in the paper's Occluded-Duke recipe).
        in_chans: input channels.
        embed_dim: token width ``D``.
        depth: number of transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over ``D``.
        qkv_bias: bias in the qkv projection.
        drop_path_rate: stochastic depth, linear from 0 to this value over the blocks.
        num_cameras: rows of the camera SIE table (``<= 1`` disables SIE).
        camera_ids: the raw camera ids of the training set, one SIE row each (default ``0..num_cameras-1``).
        sie_coef: SIE coefficient.
        jpm: build the Jigsaw Patch Module.
        num_groups: JPM local groups.
        rearrange: JPM shift + shuffle.
        shift_num: JPM shift (TransReID convention).
        shuffle_groups: JPM shuffle chunks.
    """

    def __init__(self, img_size: Tuple[int, int] = (256, 128), patch_size: int = 16, stride: int = 16,
                 in_chans: int = 3, embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path_rate: float = 0.1, num_cameras: int = 0,
                 sie_coef: float = 3.0, jpm: bool = True, num_groups: int = 4, rearrange: bool = True,
                 shift_num: int = 5, shuffle_groups: int = 2, camera_ids: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.num_features = self.embed_dim = embed_dim
        self.depth = depth
        self.patch_embed = OverlapPatchEmbed(img_size, patch_size, stride, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.sie = CameraEmbedding(num_cameras, embed_dim, sie_coef, camera_ids)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        blocks = [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, drop_path=dpr[i], norm_layer=norm_layer)
                  for i in range(depth)]
        if jpm:
            if self.patch_embed.num_patches < num_groups:
                raise ValueError(f"{self.patch_embed.num_patches} patches at {img_size} with stride {stride} cannot "
                                 f"form {num_groups} JPM groups; use a larger input or a smaller stride")
            self.blocks = nn.Sequential(*blocks[:-1])
            self.norm = None
            self.jpm = JigsawPatchModule(blocks[-1], norm_layer(embed_dim), num_groups, rearrange, shift_num,
                                         shuffle_groups)
        else:
            self.blocks = nn.Sequential(*blocks)
            self.norm = norm_layer(embed_dim)
            self.jpm = None
        self._init_weights()

    def _init_weights(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Refuse a load that keeps this model's own position embedding while taking other weights from a file:
        what torchreid's ``load_pretrained_weights`` (``FeatureExtractor``) does with a checkpoint trained at
        another input size, which would otherwise run with the embedding silently discarded."""
        pos, proj = state_dict.get(prefix + "pos_embed"), state_dict.get(prefix + "patch_embed.proj.weight")
        if pos is not None and proj is not None and _same_storage(pos, self.pos_embed) \
                and not _same_storage(proj, self.patch_embed.proj.weight):
            h, w = self.patch_embed.img_size
            error_msgs.append(f"{prefix}pos_embed was not in the weights loaded, though the patch embedding was: a "
                              f"checkpoint trained at another input size than this model's {h}x{w} (torchreid's "
                              f"load_pretrained_weights discards a position embedding of another shape). Rebuild "
                              f"the model from the checkpoint: lfem_plugin.tools.inference.load_trained(CHECKPOINT) "
                              f"(its stored config gives the size), or `lfem-reid extract`")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @property
    def num_groups(self) -> int:
        return self.jpm.num_groups if self.jpm is not None else 0

    def group_token_indices(self):
        """Patch indices (row-major over ``patch_embed.grid_size``) used by each JPM group."""
        if self.jpm is None:
            return []
        return group_token_indices(self.patch_embed.num_patches, self.jpm.num_groups, self.jpm.rearrange,
                                   self.jpm.shift_num, self.jpm.shuffle_groups)

    def forward_tokens(self, x: torch.Tensor, camera: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Patch embed, cls token, position (+ SIE) embedding and the trunk blocks: ``(B, 1 + N, D)``."""
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.pos_embed
        side = self.sie(camera)
        if side is not None:
            if side.shape[0] != tokens.shape[0]:
                raise ValueError(f"got {side.shape[0]} camera ids for a batch of {tokens.shape[0]} images")
            tokens = tokens + side
        return self.blocks(tokens)

    def forward(self, x: torch.Tensor, camera: Optional[torch.Tensor] = None) -> BackboneOutput:
        tokens = self.forward_tokens(x, camera)
        if self.jpm is None:
            return BackboneOutput(self.norm(tokens)[:, 0], ())
        return BackboneOutput(*self.jpm.forward_with_tokens(tokens))
