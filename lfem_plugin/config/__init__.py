"""yacs configuration: :mod:`.defaults` (every key), :mod:`.loader` (``_BASE_``, overrides, variants) and
:mod:`.adapters` (config -> keyword arguments). Only the pipelines (``tools/``, ``commands/``, ``cli.py``) read a
config; everything else takes the adapters' arguments.
"""
from __future__ import annotations

from .adapters import (acceleration_kwargs, build_model_kwargs, criterion_kwargs, distributed_loader_kwargs,
                       engine_run_kwargs, imagedata_kwargs, lfem_engine_kwargs, loader_kwargs,
                       market_layout_kwargs, model_kwargs, optimizer_kwargs, scheduler_kwargs, sie_mode, target_sie,
                       test_transform_kwargs, torchreid_engine_kwargs, torchreid_optimizer_kwargs,
                       transform_kwargs)
from .defaults import add_lfem_config, get_default_config
from .extensions import KeyExtension, register_keys
from .loader import apply_variant, check_choices, load_config, load_yaml_with_base

__all__ = ["get_default_config", "add_lfem_config", "load_config", "load_yaml_with_base", "apply_variant",
           "check_choices",
           "imagedata_kwargs", "model_kwargs", "optimizer_kwargs", "scheduler_kwargs", "criterion_kwargs",
           "engine_run_kwargs", "lfem_engine_kwargs", "torchreid_optimizer_kwargs", "torchreid_engine_kwargs",
           "test_transform_kwargs", "transform_kwargs", "sie_mode", "market_layout_kwargs", "target_sie",
           "build_model_kwargs", "acceleration_kwargs", "distributed_loader_kwargs", "loader_kwargs",
           "KeyExtension", "register_keys"]
