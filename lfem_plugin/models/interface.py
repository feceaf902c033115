"""What the plugin's engines and tools call on a model, beyond torchreid's contract: one protocol, :class:`ReIDModel`.

torchreid's contract (``forward`` in train mode: logits, or ``(logits, features)`` for ``loss='triplet'``; in eval
mode: one ``(B, D)`` feature) is what torchreid's own engines and ``FeatureExtractor`` use. The plugin's engine, its
evaluation and its tools (doctor, inference, export, visualize, gate analysis) use the calls below too; every
registered plugin model (:class:`~lfem_plugin.models.lfem_vit.LFEMViT`) provides them.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import torch

from .visibility import TokenGeometry

_logger = logging.getLogger(__name__)

__all__ = ["ReIDModel", "BuildArgs", "build_spec", "with_build_spec",
           "BranchFeatures", "BranchOutputs", "Views", "Window", "stack_views"]

Views = Union[torch.Tensor, Sequence[torch.Tensor]]  # list of V (B,C,H,W), (V,B,C,H,W) or (B,C,H,W)
Window = Tuple[int, int, int, int]  # (top, left, height, width) in input pixels


class BuildArgs(NamedTuple):
    """The sizes a trained model was built with that its config does not fix (they come from the training data):
    what a checkpoint needs, with the config, to rebuild the model (stored as its ``model_args``).

    Reference: torchreid ``build_model(name, num_classes, ...)`` (the class count the data manager gives) and
    TransReID's ``camera_num`` (the SIE table size).
    """

    num_classes: int  # training identities (classifier rows)
    num_cameras: int  # SIE rows (0: no SIE)
    camera_ids: Optional[List[int]]  # the raw training camera id of each SIE row (None: no SIE)

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> "BuildArgs":
        """The fields of a checkpoint's ``model_args``; keys this version does not know (written by a newer one)
        are ignored with a warning. Raises TypeError when one of its fields is missing."""
        unknown = sorted(set(stored) - set(cls._fields))
        if unknown:
            _logger.warning("checkpoint model_args %s are not known to this version of lfem_plugin; ignored",
                            unknown)
        return cls(**{key: stored[key] for key in cls._fields if key in stored})


def build_spec(model: Any) -> Optional[Dict[str, Any]]:
    """What a registered builder built ``model`` with: ``{'name': registered name, 'kwargs': every resolved builder
    argument}`` (``num_classes``, ``loss``, ``img_size``, the SIE sizes, ...; ImageNet weights excluded), stored in
    checkpoints as ``model_build`` so rebuilding needs neither the name's current settings nor the defaults. None
    for a model not built by a registered plugin builder."""
    spec = getattr(model, "build_spec", None)
    return {"name": spec["name"], "kwargs": dict(spec["kwargs"])} if isinstance(spec, dict) else None


def with_build_spec(model: Any, name: str, kwargs: Mapping[str, Any]) -> Any:
    """``model`` with its :func:`build_spec` attached: the registered ``name`` and every resolved builder argument
    (``pretrained_path`` left out: where ImageNet weights came from is not part of the trained model)."""
    model.build_spec = {"name": name, "kwargs": {k: v for k, v in kwargs.items() if k != "pretrained_path"}}
    return model


class BranchFeatures(NamedTuple):
    """The supervised features of one training forward, in branch order (views' globals, then locals)."""

    names: Tuple[str, ...]
    features: List[torch.Tensor]  # pre-BN, the triplet inputs
    gates: Optional[torch.Tensor]  # (B, K) LFEM relation gates of the original view, None without LFEM
    # (V*B, K) every view's gates before the sigmoid, rows in the order of the stacked views (view-major, as
    # stack_views lays them out): row v*B + b is view v of image b. None without LFEM.
    gate_logits: Optional[torch.Tensor] = None
    # (V*B, K, ...) what the fusion's blocks add per group in the same row order (a research block's per-token
    # scores, e.g. projects/visibility), None for the paper's LFEM
    aux: Optional[torch.Tensor] = None


class BranchOutputs(NamedTuple):
    """:class:`BranchFeatures` plus each branch's logits (post-BNNeck classifier)."""

    names: Tuple[str, ...]
    logits: List[torch.Tensor]
    features: List[torch.Tensor]
    gates: Optional[torch.Tensor]


def stack_views(x: Views) -> Tuple[torch.Tensor, int]:
    """``list of V (B,C,H,W)`` or ``(V,B,C,H,W)`` or ``(B,C,H,W)`` -> ``(V*B, C, H, W)`` and ``V``."""
    if isinstance(x, (list, tuple)):
        return torch.cat(list(x), dim=0), len(x)
    if x.dim() == 5:
        return x.flatten(0, 1), x.shape[0]
    return x, 1


@runtime_checkable
class ReIDModel(Protocol):
    """The model interface of the plugin's engines and tools.

    Attributes:
        branch_names: the supervised branches in loss order: one global branch per training view (named after the
            view: ``original``, ``erased``, ``cropped``), then the local branches (``local1..K``).
        num_views: the training views the model expects in one batch (its global branches).
        num_features: ``D``, the width of one branch feature.
        use_lfem: the model fuses its locals with LFEM (it has gates).
        img_size: the input ``(height, width)``.

    Reference: torchreid's model contract (``forward`` gives logits / ``(logits, features)`` in training, features
    in eval); fast-reid ``meta_arch.Baseline`` (backbone + heads with named losses); timm's ``forward_features`` /
    ``forward_head`` split.
    """

    branch_names: Tuple[str, ...]
    num_views: int
    num_features: int
    use_lfem: bool
    img_size: Tuple[int, int]

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

    def group_windows(self) -> List[List[Window]]:
        """The input pixels each local group (gate) sees: per group, its patches as windows."""

    def build_args(self) -> BuildArgs:
        """The data-given sizes the model was built with (stored in checkpoints to rebuild it)."""

    def token_geometry(self) -> TokenGeometry:
        """The patch grid and JPM grouping the model's gates see (what visibility targets must be computed in)."""
