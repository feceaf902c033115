"""Models of the plugin; importing this package fills :data:`lfem_plugin.registry.MODELS`."""
from .backbones import ARCHS, backbone_norm, build_backbone
from .interface import BuildArgs, ReIDModel
from .lfem import LFEM, SequentialFusion
from .lfem_vit import BranchOutputs, LFEMViT, create_lfem_vit, register_variant
from .pretrained import WEIGHT_SOURCES, checkpoint_filter_fn, load_pretrained
from .vit import BackboneOutput, TransReIDViT

__all__ = ["ARCHS", "backbone_norm", "build_backbone", "ReIDModel", "BuildArgs", "LFEM", "SequentialFusion",
           "BranchOutputs", "LFEMViT", "create_lfem_vit", "register_variant", "WEIGHT_SOURCES", "checkpoint_filter_fn",
           "load_pretrained",
           "BackboneOutput", "TransReIDViT"]
