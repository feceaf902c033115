"""Engines: :class:`LFEMEngine` (one hook, ``forward_backward``) and torchreid's engines with the plugin's parts -
the loop (:mod:`.loop`), evaluation (:mod:`.evaluation`) and checkpointing (:mod:`.checkpointing`)."""
from __future__ import annotations

from .checkpointing import NonFiniteLossError
from .engines import (MAX_SKIPPED_FP16_STEPS, LFEMEngine, Step, TorchreidSoftmaxEngine, TorchreidTripletEngine,
                      print_results)

__all__ = ["LFEMEngine", "Step", "NonFiniteLossError", "TorchreidSoftmaxEngine", "TorchreidTripletEngine",
           "print_results", "MAX_SKIPPED_FP16_STEPS"]
