"""The visibility study's engine: :class:`~lfem_plugin.engine.LFEMEngine` with its two hooks filled - the batch
carries each view's visibility targets (and the occluders are pasted in), and the gate / token visibility losses are
added to the identity losses.
"""
from __future__ import annotations

from typing import Any, Dict

import torch

from lfem_plugin.engine import LFEMEngine
from lfem_plugin.engine.engines import Batch
from lfem_plugin.models.interface import BranchFeatures
from lfem_plugin.utils import distributed as D

from .losses import GateVisibilityLoss, TokenVisibilityLoss
from .occluders import OCCLUDERS, PASTED, paste_occluders, split_views

__all__ = ["VisibilityEngine"]


class VisibilityEngine(LFEMEngine):
    """:class:`~lfem_plugin.engine.LFEMEngine` that trains the gates to see occlusion.

    Reference: FED (Wang et al., CVPR 2022) for visibility learned from synthetic occluders.

    Args:
        gate_supervision: weight of :class:`~lfem_visibility.losses.GateVisibilityLoss` (0: off, the paper); needs a
            train transform that gives visibility targets (:class:`~lfem_visibility.occluders.VisibilityMultiView`).
        token_supervision: weight of :class:`~lfem_visibility.losses.TokenVisibilityLoss` (0: off): the per-token
            gate scores of a model with ``gate_input='relation_tokens(_mlp)'`` against each patch's visible
            fraction, from the same boxes (needs the same transform).
        occluder: ``'noise'`` (paper), ``'paste'`` or ``'paste_resized'``: erased rectangles are filled from another
            identity's first view, its same rectangle or a rectangle cut anywhere and resized into it
            (:func:`~lfem_visibility.occluders.paste_occluders`; needs the same transform).
        **kwargs: :class:`~lfem_plugin.engine.LFEMEngine`'s arguments.

    Raises:
        ValueError: an unknown ``occluder``.
    """

    def __init__(self, *args: Any, gate_supervision: float = 0.0, occluder: str = "noise",
                 token_supervision: float = 0.0, **kwargs: Any) -> None:
        if occluder not in OCCLUDERS:
            raise ValueError(f"occluder={occluder!r}; choices: {OCCLUDERS}")
        super().__init__(*args, **kwargs)
        self.occluder = occluder
        self.gate_loss = GateVisibilityLoss(gate_supervision) if gate_supervision else None
        self.token_loss = TokenVisibilityLoss(token_supervision) if token_supervision else None
        # per-token targets come from the model's own patch grid and JPM order (the boxes are the views')
        self.token_geometry = D.unwrap(self.model).token_geometry() if token_supervision else None

    def prepare_batch(self, data: Dict[str, Any]) -> Batch:
        """The stacked views (occluders pasted in the ``'paste'`` modes), with ``extras``: ``visibility`` ``(B, V,
        K)`` (from a :class:`~lfem_visibility.occluders.VisibilityMultiView`) and, with token supervision,
        ``token_visibility`` ``(B, V, K, n)``."""
        pids = data["pid"].to(self.device, non_blocking=True)
        views, visibility, boxes = split_views(data["img"])
        images = torch.stack([v.to(self.device, non_blocking=True) for v in views])
        needs = self.gate_loss is not None or self.token_loss is not None or self.occluder in PASTED
        if needs and visibility is None:
            raise ValueError("lfem.gate_supervision > 0, lfem.token_supervision > 0 or a pasting lfem.occluder needs "
                             "visibility targets from the train transform; build the data manager with "
                             "lfem_plugin.build_datamanager(cfg), which gives them for these keys "
                             "(lfem_visibility.occluders.VisibilityMultiView)")
        if self.occluder in PASTED:
            images = paste_occluders(images, boxes.to(self.device, non_blocking=True), pids,
                                     resize=self.occluder == "paste_resized")
        extras = {}
        if visibility is not None:
            extras["visibility"] = visibility.to(self.device, non_blocking=True)
        if self.token_loss is not None:
            batch, num_views = boxes.shape[:2]
            tokens = self.token_geometry.tokens_from_boxes(boxes.to(self.device, non_blocking=True))
            extras["token_visibility"] = tokens.view(batch, num_views, *tokens.shape[1:])
        return Batch(images, data["camid"].to(self.device, non_blocking=True), pids, extras)

    def extra_loss(self, out: BranchFeatures, batch: Batch) -> Dict[str, torch.Tensor]:
        """``vis/gate_bce`` and ``vis/token_bce`` (when on), on this rank's own views: gates and targets never leave
        their images."""
        terms = {}
        if self.gate_loss is not None:
            terms["vis/gate_bce"] = self.gate_loss(out.gate_logits, batch.extras["visibility"])
        if self.token_loss is not None:
            terms["vis/token_bce"] = self.token_loss(out.aux, batch.extras["token_visibility"])
        return terms
