"""The plugin's engines: :class:`LFEMEngine` for the LFEM models, and torchreid's own engines with the plugin's
evaluation and checkpoints, so that every model of a comparison is scored and saved by the same code.

Each engine is torchreid's, plus three parts with one job each: :class:`~lfem_plugin.engine.loop.TrainLoopMixin`
(the loop around ``train``/``run``), :class:`~lfem_plugin.engine.evaluation.EvaluationMixin` (``test``/``_evaluate``)
and :class:`~lfem_plugin.engine.checkpointing.CheckpointMixin` (``save_model``/``resume``). :class:`LFEMEngine` adds
the hook that differs, ``forward_backward``: multi-view batches with camera ids, AMP, gradient clipping, non-finite
checks. Its step is :meth:`LFEMEngine.prepare_batch` (the batch on the device, views stacked view-major) then
:meth:`LFEMEngine.training_step` (forward, heads and loss: one graph); a research project adds to both through two
hooks that do nothing here, ``prepare_batch`` and ``extra_loss`` (e.g. ``projects/visibility``).

Reference: torchreid ``Engine``/``ImageSoftmaxEngine``/``ImageTripletEngine`` (Zhou & Xiang, "Torchreid: A Library
for Deep Learning Person Re-Identification in Pytorch", 2019); LFEM paper Sec. 3.4 and 4.2.
"""
from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from typing import Any, Dict, List, NamedTuple, Optional

import torch
from torch import nn

from .. import _torchreid
from ..losses import MultiBranchLoss
from ..models.interface import BranchFeatures, ReIDModel
from ..optim import guarded_step
from ..utils import distributed as D
from .checkpointing import CheckpointMixin, NonFiniteLossError, non_finite_advice
from .evaluation import EvaluationMixin, print_results
from .loop import TrainLoopMixin

__all__ = ["LFEMEngine", "Batch", "Step", "NonFiniteLossError", "TorchreidSoftmaxEngine", "TorchreidTripletEngine",
           "print_results", "MAX_SKIPPED_FP16_STEPS"]

_logger = logging.getLogger(__name__)
_TR = _torchreid.root()

# fp16 AMP: GradScaler skips a step whose gradients overflow and lowers its scale; that is not a failure. A loss
# that stays non-finite for this many consecutive steps is (the forward itself overflows).
MAX_SKIPPED_FP16_STEPS = 20


class Batch(NamedTuple):
    """One training batch on the device, in the plugin's one layout: the views stacked view-major (``images[v, b]``
    is view ``v`` of image ``b``; the model flattens them to rows ``v*B + b``,
    :func:`~lfem_plugin.models.interface.stack_views`)."""

    images: torch.Tensor  # (V, B, C, H, W)
    cameras: torch.Tensor  # (B,) raw camera ids
    pids: torch.Tensor  # (B,) identities
    extras: Dict[str, torch.Tensor] = {}  # what a project's prepare_batch adds (e.g. visibility targets); never mutated


class Step(NamedTuple):
    """One training step's forward (:meth:`LFEMEngine.training_step`).

    Reference: torchreid ``Engine.forward_backward`` (which returns the step's loss summary); fast-reid
    ``SimpleTrainer.run_step`` (loss dict per step).
    """

    loss: torch.Tensor
    terms: Dict[str, torch.Tensor]  # each branch's CE / triplet term
    logits: List[torch.Tensor]  # per branch, in the model's branch order
    pids: torch.Tensor  # the identities the logits are scored against (the global batch under DDP)
    gates: Optional[torch.Tensor]  # (B, K) LFEM gates of the original view, None without LFEM


class _PluginParts(TrainLoopMixin, EvaluationMixin, CheckpointMixin):
    """The three parts every engine of the plugin adds to torchreid's."""

    def _init_parts(self, use_cameras: bool, checkpoint_period: int, save_checkpoints: bool,
                    config_text: str, target_sie: Optional[Dict[str, str]] = None, eval_amp: str = "off") -> None:
        self._init_loop()
        self._init_evaluation(use_cameras, target_sie, eval_amp)
        self._init_checkpointing(checkpoint_period, save_checkpoints, config_text)


class LFEMEngine(_PluginParts, _TR.engine.Engine):
    """Trains a plugin model in torchreid: :class:`~lfem_plugin.models.LFEMViT`, or any model that implements
    :class:`~lfem_plugin.models.interface.ReIDModel` (the one protocol engines and tools use).

    Reference: torchreid ``Engine``; LFEM paper Sec. 3.4 (seven-branch CE + triplet).

    Args:
        datamanager: a torchreid ``ImageDataManager`` whose train transform returns a list of views.
        model: a :class:`~lfem_plugin.models.interface.ReIDModel` (already on its device; DDP-wrapped or not).
        optimizer: e.g. :func:`lfem_plugin.optim.build_optimizer`.
        scheduler: e.g. :class:`lfem_plugin.optim.WarmupCosineLR` (``step()`` once per epoch).
        criterion: :class:`MultiBranchLoss` over the model's branches.
        use_gpu: run on CUDA when available.
        amp: ``'bf16'``, ``'fp16'`` (with a GradScaler) or ``'off'``; always off on CPU.
        eval_amp: evaluation autocast, ``'bf16'`` or ``'off'``; always off on CPU.
        grad_clip: max gradient norm (0: off).
        use_cameras: pass query/gallery camera ids to the model at evaluation (SIE).
        target_sie: per target, how its cameras reach SIE (``'cameras'``, ``'mean'``, ``'off'``; default
            ``'cameras'``); see :func:`lfem_plugin.config.target_sie`.
        checkpoint_period: also checkpoint every N epochs (0: only at evaluations and the end).
        save_checkpoints: write checkpoints at all (comparisons turn it off).
        config_text: the run's config (YAML), stored in every checkpoint.

    Raises:
        TypeError: ``model`` (unwrapped) is not a ``ReIDModel`` (torchreid's own models: its engines,
            :class:`TorchreidSoftmaxEngine` / :class:`TorchreidTripletEngine`).
        ValueError: an unknown ``amp``.
    """

    def __init__(self, datamanager, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 criterion: MultiBranchLoss, use_gpu: bool = True, amp: str = "bf16", grad_clip: float = 0.0,
                 use_cameras: bool = True, checkpoint_period: int = 0, save_checkpoints: bool = True,
                 config_text: str = "", target_sie: Optional[Dict[str, str]] = None, eval_amp: str = "off") -> None:
        if not isinstance(D.unwrap(model), ReIDModel):
            raise TypeError(f"LFEMEngine trains a model implementing lfem_plugin.models.interface.ReIDModel "
                            f"(branch_names, num_views, classify, gates, ...); got {type(D.unwrap(model)).__name__}. "
                            f"torchreid's own models train with TorchreidSoftmaxEngine or TorchreidTripletEngine")
        super().__init__(datamanager, use_gpu)
        self.model, self.optimizer, self.scheduler, self.criterion = model, optimizer, scheduler, criterion
        self.register_model("model", model, optimizer, scheduler)
        if amp not in ("bf16", "fp16", "off"):
            raise ValueError(f"amp={amp!r}; choices: 'bf16', 'fp16', 'off'")
        self.amp = amp if self.use_gpu else "off"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        self.grad_clip = grad_clip
        self.num_views = getattr(D.unwrap(model), "num_views", 1)
        self.skipped_steps = 0
        self._init_parts(use_cameras, checkpoint_period, save_checkpoints, config_text, target_sie, eval_amp)
        self.all_finite = torch.ones((), dtype=torch.bool, device=self.device)  # no non-finite loss yet (non-fp16)

    # ---- training ----------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.amp == "off":
            return nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    def prepare_batch(self, data: Dict[str, Any]) -> Batch:
        """The hook before the step: a collated torchreid batch -> :class:`Batch` on the device (the views stacked
        view-major), copied without waiting. A research project overrides it to add ``extras``."""
        img = data["img"]
        views = list(img) if isinstance(img, (list, tuple)) else [img]
        images = torch.stack([v.to(self.device, non_blocking=True) for v in views])
        return Batch(images, data["camid"].to(self.device, non_blocking=True),
                     data["pid"].to(self.device, non_blocking=True))

    def extra_loss(self, out: BranchFeatures, batch: Batch) -> Dict[str, torch.Tensor]:
        """The hook inside the step: loss terms beyond the identity losses (name -> weighted 0-dim tensor, added to
        the loss and logged), from this rank's own forward ``out`` and ``batch``. None in the paper."""
        return {}

    def forward_backward(self, data: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """One training step; returns its summary (loss, acc in %, every term, mean gates) as 0-dim device
        tensors, read to the host by the loop every ``print_freq`` steps: the step itself reads nothing back (no
        device sync), so the host can queue the next steps while the device computes."""
        with self._autocast():
            step = self.training_step(self.prepare_batch(data))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(step.loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if self.amp == "fp16":  # GradScaler skips a step whose gradients overflow, on the device
            self.scaler.step(self.optimizer)
        else:  # a non-finite loss stops the run at the next read; until then no step changes the weights
            self.all_finite = torch.isfinite(step.loss.detach()) & self.all_finite
            guarded_step(self.optimizer, self.all_finite)
        self.scaler.update()
        self.global_step += 1
        summary = {"loss": step.loss.detach(),
                   "acc": (step.logits[0].detach().argmax(1) == step.pids).float().mean() * 100,
                   **{k: v.detach() for k, v in step.terms.items()}}
        if step.gates is not None:
            summary.update({f"gate/{k + 1}": g for k, g in enumerate(step.gates.detach().float().mean(0))})
        return summary

    def training_step(self, batch: Batch) -> Step:
        """Forward, heads and loss of one :class:`Batch` on the device (under the caller's autocast): one graph for
        ``torch.compile`` (no host read, no data-dependent branch; :meth:`compile`)."""
        out = self.model(batch.images, camera=batch.cameras, branch_features=True)
        # Under DDP, heads and losses see the global batch (BNNeck statistics, batch-hard mining), as a single
        # process would; gradients flow back to each rank through the differentiable gather.
        features = [D.all_gather_cat(f) for f in out.features]
        pids = D.all_gather_cat(batch.pids)
        logits = D.unwrap(self.model).classify(out.names, features)
        loss, terms = self.criterion(logits, features, pids, out.names)
        for name, term in self.extra_loss(out, batch).items():  # this rank's own views: they never leave it
            terms[name] = term
            loss = loss + term
        return Step(loss, terms, logits, pids, out.gates)

    def compile(self, **kwargs: Any) -> None:
        """``torch.compile`` :meth:`training_step` (forward, heads and loss: one graph) and, in place, the model
        (its evaluation forward; the state dict keeps its keys, so checkpoints stay interchangeable)."""
        D.unwrap(self.model).compile(**kwargs)
        self.training_step = torch.compile(self.training_step, **kwargs)

    def _check_steps(self, steps) -> None:
        """Stop on a non-finite loss, naming its step and the newest finite checkpoint; under fp16 AMP, GradScaler
        skips such a step (its gradients overflow) and only a run of ``MAX_SKIPPED_FP16_STEPS`` of them fails."""
        for step in steps:
            loss = step.summary["loss"]
            if math.isfinite(loss):
                self.skipped_steps = 0
                continue
            self.skipped_steps += 1
            if self.amp == "fp16" and self.skipped_steps < MAX_SKIPPED_FP16_STEPS:
                _logger.warning("non-finite loss at step %d under fp16: GradScaler skipped the step",
                                step.global_step)
                continue
            bad = {k: v for k, v in step.summary.items() if k not in ("loss", "acc") and not k.startswith("gate/")}
            raise NonFiniteLossError(f"non-finite loss at epoch {step.epoch + 1}, iteration {step.batch_idx + 1} "
                                     f"(step {step.global_step}): total={loss}, terms={bad}. "
                                     f"Training stopped; {non_finite_advice(self._save_dir)}.")


class _TorchreidParts(_PluginParts):
    """torchreid's engine ``__init__`` plus the plugin's parts (no cameras at evaluation: torchreid's models take
    none)."""

    def __init__(self, *args: Any, checkpoint_period: int = 0, save_checkpoints: bool = True, config_text: str = "",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_parts(False, checkpoint_period, save_checkpoints, config_text)


class TorchreidSoftmaxEngine(_TorchreidParts, _TR.engine.ImageSoftmaxEngine):
    """torchreid's ``ImageSoftmaxEngine`` with the plugin's evaluation and checkpoints (for fair comparisons).

    Reference: torchreid ``ImageSoftmaxEngine``.
    """


class TorchreidTripletEngine(_TorchreidParts, _TR.engine.ImageTripletEngine):
    """torchreid's ``ImageTripletEngine`` with the plugin's evaluation and checkpoints (for fair comparisons).

    Reference: torchreid ``ImageTripletEngine``.
    """
