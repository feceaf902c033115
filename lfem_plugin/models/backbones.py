"""TransReID backbone architectures as data (:data:`ARCHS`) and their builder, :func:`build_backbone`.

Reference: TransReID (ICCV 2021); variants follow timm's ``vision_transformer.py`` naming.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from .pretrained import IMAGENET_MEAN, IMAGENET_STD, WEIGHT_SOURCES, load_pretrained, resolve_weights
from .vit import TransReIDViT

__all__ = ["ARCHS", "build_backbone", "backbone_norm"]

_logger = logging.getLogger(__name__)

# Architecture -> constructor arguments and the weight source that fits it (None: no ImageNet weights).
ARCHS: Dict[str, Dict[str, Any]] = {
    "vit_base_patch16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, weights="vit_base_patch16_224.jx"),
    "deit_base_patch16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12,
                              weights="deit_base_distilled_patch16_224"),
    "deit_small_patch16": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6,
                               weights="deit_small_distilled_patch16_224"),
    # CPU-sized, from random init: the CUHK03 (camera pair 1, 128x64) ablation on a 2-core CPU (configs/cuhk03_pair1/).
    "vit_mini": dict(patch_size=16, embed_dim=128, depth=4, num_heads=4, weights=None),
    # Tiny test variant: runs in milliseconds on CPU; never pretrained.
    "vit_tiny_test": dict(patch_size=16, embed_dim=64, depth=3, num_heads=2, weights=None),
}


def backbone_norm(arch: str):
    """``(mean, std)`` the architecture's ImageNet weights expect (ImageNet statistics when it has none)."""
    source = ARCHS[arch]["weights"]
    spec = WEIGHT_SOURCES.get(source) if source else None
    return (spec.mean, spec.std) if spec else (IMAGENET_MEAN, IMAGENET_STD)


def build_backbone(arch: str, pretrained: bool = False, pretrained_path: Optional[str] = None,
                   **kwargs: Any) -> TransReIDViT:
    """Build ``arch`` with ``kwargs`` overriding its defaults; load ImageNet weights if asked.

    Args:
        arch: a key of :data:`ARCHS`.
        pretrained: load the architecture's ImageNet weights (from ``pretrained_path`` or the download cache).
        pretrained_path: a local checkpoint file; implies ``pretrained``.
        **kwargs: :class:`TransReIDViT` arguments (stride, img_size, num_cameras, ...).
    """
    if arch not in ARCHS:
        raise KeyError(f"unknown backbone architecture {arch!r}; choices: {sorted(ARCHS)}")
    spec = dict(ARCHS[arch])
    source = spec.pop("weights")
    model = TransReIDViT(**dict(spec, **kwargs))
    if pretrained or pretrained_path:
        if source is None and not pretrained_path:
            raise ValueError(f"backbone {arch!r} has no ImageNet weights; use pretrained=False")
        load_pretrained(model, resolve_weights(source, pretrained_path))
    return model
