"""What the plugin's engines and tools call on a model, beyond torchreid's contract: one protocol, :class:`ReIDModel`.

torchreid's contract (``forward`` in train mode: logits, or ``(logits, features)`` for ``loss='triplet'``; in eval
mode: one ``(B, D)`` feature) is what torchreid's own engines and ``FeatureExtractor`` use. The plugin's engine, its
evaluation and its tools (doctor, inference, export, visualize, gate analysis) use the calls below too; every
registered plugin model (:class:`~lfem_plugin.models.lfem_vit.LFEMViT`) provides them.
"""
from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import torch

__all__ = ["ReIDModel", "BuildArgs", "Views"]

Views = Union[torch.Tensor, Sequence[torch.Tensor]]  # list of V (B,C,H,W), (V,B,C,H,W) or (B,C,H,W)


class BuildArgs(NamedTuple):
    """The sizes a trained model was built with that its config does not fix (they come from the training data):
    what a checkpoint needs, with the config, to rebuild the model."""

    num_classes: int  # training identities (classifier rows)
    num_cameras: int  # SIE rows (0: no SIE)
    camera_ids: Optional[List[int]]  # the raw training camera id of each SIE row (None: no SIE)


@runtime_checkable
class ReIDModel(Protocol):
    """The model interface of the plugin's engines and tools.

    Attributes:
        branch_names: the supervised branches in loss order: one global branch per training view (named after the
            view: ``original``, ``erased``, ``cropped``), then the local branches (``local1..K``).
        num_views: the training views the model expects in one batch (its global branches).
        num_features: ``D``, the width of one branch feature.
        use_lfem: the model fuses its locals with LFEM (it has gates).
    """

    branch_names: Tuple[str, ...]
    num_views: int
    num_features: int
    use_lfem: bool

    @property
    def uses_sie(self) -> bool:
        """Camera ids change the features (camera SIE with more than one training camera)."""

    def forward(self, x: Views, camera: Optional[torch.Tensor] = None, branch_features: bool = False) -> Any:
        """torchreid's contract; ``branch_features=True`` (train mode): the branches' names, pre-BN features
        (each ``(B, D)``) and the LFEM gates ``(B, K)`` (None without LFEM), with no heads run."""

    def classify(self, names: Sequence[str], features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Each named branch's BNNeck + classifier logits ``(B, num_classes)``, for features from ``forward``."""

    def gates(self, x: torch.Tensor, camera: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """The LFEM relation gates ``(B, K)`` of one view ``(B, 3, H, W)`` in the model's current mode; None for a
        model without LFEM."""

    def build_args(self) -> BuildArgs:
        """The data-given sizes the model was built with (stored in checkpoints to rebuild it)."""
