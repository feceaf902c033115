"""lfem_plugin: occluded person re-identification with fine-grained local features, as a torchreid plugin.

``import lfem_plugin`` is required before torchreid can see the plugin's names: it calls :func:`register_all`,
which pushes the registered models into ``torchreid.models.build_model`` and the datasets into
``torchreid.data.register_image_dataset``.

Reference: Wang, "Enhancing Global Features with Fine-Grained Local Features for Occluded Person
Re-identification".
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import _torchreid
from .registry import BACKBONES, DATASETS, MODELS


def register_all() -> None:
    """Register every plugin model and dataset into torchreid. Idempotent; raises on a clash with another object."""
    from . import data, models  # noqa: F401  (fill the registries)

    for name, builder in MODELS.items():
        _torchreid.add_model(name, builder)
    for name, cls in DATASETS.items():
        _torchreid.add_image_dataset(name, cls)


register_all()

__all__ = ["__version__", "register_all", "MODELS", "DATASETS", "BACKBONES"]
