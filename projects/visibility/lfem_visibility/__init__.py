"""lfem_visibility: the visibility-aware LFEM, a research project beside lfem_plugin (beyond the paper).

``import lfem_visibility`` registers everything: its config keys (``lfem.gate_supervision``, ``lfem.occluder``,
``lfem.gate_scope``, ``lfem.token_supervision``, ``lfem.gate_grad``, ``lfem.gate_input``), its model names
(``lfem_vit_vis*``, into torchreid too, so ``FeatureExtractor`` builds them), its training family and its
comparison profiles (``visibility``, ``visibility_pedestrians``). ``lfem-reid`` loads it by itself when it is
installed (the ``lfem_plugin.projects`` entry point). Measured result: the gate does not learn to see occlusion at
the CPU scale tried (README.md).

Reference: FED (Wang et al., "Feature Erasing and Diffusion Network for Occluded Person Re-Identification", CVPR
2022) for visibility learned from synthetic occluders; Wang, "Enhancing Global Features with Fine-Grained Local
Features for Occluded Person Re-identification" for the LFEM.
"""
from __future__ import annotations

import lfem_plugin

from . import config, family, models, protocols  # noqa: F401  (register the keys, family, names and profiles)

__version__ = "0.1.0"

lfem_plugin.register_all()  # the new names into torchreid's model factory

__all__ = ["__version__"]
