"""Models of the plugin; importing this package fills :data:`lfem_plugin.registry.MODELS`."""
from .backbones import ARCHS, backbone_norm, build_backbone
from .interface import BuildArgs, ReIDModel
from .lfem import LFEM, SequentialFusion
from .lfem_vit import BranchOutputs, LFEMViT, create_lfem_vit
from . import lfem_vit_vis  # noqa: F401  (registers the visibility-aware names)
from .pretrained import WEIGHT_SOURCES, checkpoint_filter_fn, load_pretrained
from .vit import BackboneOutput, TransReIDViT

__all__ = ["ARCHS", "backbone_norm", "build_backbone", "ReIDModel", "BuildArgs", "LFEM", "SequentialFusion",
           "BranchOutputs", "LFEMViT", "create_lfem_vit", "WEIGHT_SOURCES", "checkpoint_filter_fn", "load_pretrained",
           "BackboneOutput", "TransReIDViT"]
