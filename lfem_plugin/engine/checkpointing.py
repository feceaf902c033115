"""Engine checkpoints: the part of every plugin engine that saves a resumable checkpoint and resumes from one, on top
of the file format of :mod:`lfem_plugin.utils.checkpoint`.

Reference: torchreid ``Engine.save_model`` / ``utils.resume_from_checkpoint``.
"""
from __future__ import annotations

import logging
import math
import os

from ..data.fingerprint import fingerprint_change, train_fingerprint
from ..models.interface import ReIDModel, build_spec
from ..utils import distributed as D
from ..utils.checkpoint import (NonFiniteStateError, list_checkpoints, load_checkpoint, newest_finite_checkpoint,
                                non_finite_tensors, rng_state, save_checkpoint, set_rng_state)

__all__ = ["CheckpointMixin", "NonFiniteLossError", "non_finite_advice"]

_logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or weights; no non-finite checkpoint is ever written."""


RISE = 1.1  # a checkpoint whose epoch loss rose above RISE x the lowest epoch loss so far was already diverging


def non_finite_advice(save_dir: str) -> str:
    """What to do after a divergence: the checkpoint to resume from, and what to change.

    Finite is not enough: the checkpoints of the epochs before a divergence are finite but often already diverging
    (their epoch loss thousands of times the best; a fresh optimiser at a lower lr does not bring them back). The
    one named is the newest whose epoch training loss (stored as ``train_loss``) was still within ``RISE`` of the
    lowest so far; for checkpoints without a stored loss, the newest finite one, said to be unchecked.
    """
    folder = os.path.join(save_dir, "model")
    usable, losses = usable_checkpoint(folder)
    if usable is not None:
        after = [p for p, _ in losses].index(usable) + 1
        rose = [f"{p.name} {loss:.4g}" for p, loss in losses[after:] if loss is not None]
        later = f" (later epoch losses: {', '.join(rose)}: finite but already diverging)" if rose else ""
        where = f"the newest checkpoint whose training loss was still falling is {usable} (epoch loss " \
                f"{dict(losses)[usable]:.4g}){later}"
    else:
        newest = newest_finite_checkpoint(folder)
        where = (f"the newest finite checkpoint is {newest} (its training loss is not recorded: it may already be "
                 f"diverging; an earlier one is safer)" if newest else f"no finite checkpoint exists in {save_dir}")
    return f"{where}. Lower train.lr or set lfem.grad_clip, then resume from it (--resume PATH) or start again"


def usable_checkpoint(folder: str):
    """The newest finite checkpoint in ``folder`` whose stored epoch loss is within ``RISE`` of the lowest epoch
    loss of it and the checkpoints before it (None if none has a loss), and every finite checkpoint's
    ``(path, loss or None)``, oldest first."""
    losses = []
    for _, path in list_checkpoints(folder):
        try:
            state = load_checkpoint(path)
        except (OSError, ValueError, RuntimeError):
            continue
        if not non_finite_tensors({"s": state.get("state_dict", {}), "o": state.get("optimizer", {})}):
            losses.append((path, state.get("train_loss")))
    best, usable = math.inf, None
    for path, loss in losses:
        if loss is not None:
            best = min(best, loss)
            usable = path if loss <= RISE * best else usable
    return usable, losses


class CheckpointMixin:
    """Engine checkpoints: atomic ``weights_only`` files that resume exactly (model, optimiser, scheduler, AMP
    scaler, RNG streams, step), every ``checkpoint_period`` epochs too, written by rank 0, never non-finite and
    never over a resumed run's later epochs; each carries the run's config text.

    Reference: torchreid ``Engine.save_model`` / ``utils.resume_from_checkpoint``.
    """

    scaler = None

    def _init_checkpointing(self, checkpoint_period: int, save_checkpoints: bool, config_text: str) -> None:
        self.checkpoint_period = checkpoint_period
        self.save_checkpoints = save_checkpoints
        self.config_text = config_text
        self.resumed_epoch = 0
        self.global_step = 0

    def _end_of_epoch(self, save_dir: str) -> None:
        if self.checkpoint_period and (self.epoch + 1) % self.checkpoint_period == 0:
            self.save_model(self.epoch, float("nan"), save_dir)

    def save_model(self, epoch: int, rank1: float, save_dir: str, is_best: bool = False) -> None:
        """Atomic checkpoint ``save_dir/model/model.pth.tar-<epoch+1>`` that resumes exactly (rank 0 writes)."""
        if not D.is_main() or not self.save_checkpoints:
            return
        if epoch + 1 < self.resumed_epoch:  # never overwrite the run's future with its past
            raise RuntimeError(f"refusing to write the epoch-{epoch + 1} checkpoint of a run resumed at epoch "
                               f"{self.resumed_epoch}")
        state = {"state_dict": D.unwrap(self.model).state_dict(), "epoch": epoch + 1,
                 "rank1": float(rank1) if rank1 is not None and not math.isnan(float(rank1)) else -1.0,
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                 "rng": rng_state(), "global_step": self.global_step,
                 "results": {k: {"mAP": v["mAP"], "cmc": v["cmc"][:50]} for k, v in self.last_results.items()}}
        if self.config_text:
            state["config"] = self.config_text
        loss = getattr(self, "epoch_loss", None)
        if loss is not None and math.isfinite(loss):  # the epoch's mean training loss: non_finite_advice reads it
            state["train_loss"] = float(loss)
        fingerprint = self._train_fingerprint()
        if fingerprint is not None:  # resuming on other training data is refused (resume)
            state["train_fingerprint"] = fingerprint
        model = D.unwrap(self.model)
        if isinstance(model, ReIDModel):  # the data-given sizes: the config plus these rebuild the model
            state["model_args"] = model.build_args()._asdict()
        spec = build_spec(model)
        if spec is not None:  # every resolved builder argument: rebuilds the model without its config
            state["model_build"] = spec
        try:
            path = save_checkpoint(state, os.path.join(save_dir, "model", f"model.pth.tar-{epoch + 1}"))
        except NonFiniteStateError as err:
            raise NonFiniteLossError(f"epoch {epoch + 1}: training diverged: {err}; "
                                     f"{non_finite_advice(save_dir)}") from None
        _logger.info("checkpoint saved to %s", path)

    def resume(self, path: str) -> int:
        """Restore model, optimiser, scheduler, scaler and RNG states; returns the epoch to start from."""
        state = load_checkpoint(path)
        self._check_same_training_data(state, path)
        D.unwrap(self.model).load_state_dict(state["state_dict"])
        self._resume_optimization(state, path)
        if state.get("scaler") and self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.global_step = int(state.get("global_step", 0))
        self.resumed_epoch = int(state["epoch"])
        _logger.info("resumed from %s (epoch %d)", path, state["epoch"])
        return int(state["epoch"])

    def _train_fingerprint(self):
        """The :func:`~lfem_plugin.data.fingerprint.train_fingerprint` of the data manager's training set (computed
        once); None without one."""
        if getattr(self, "_fingerprint", None) is None:
            loader = getattr(getattr(self, "datamanager", None), "train_loader", None)
            items = getattr(getattr(loader, "dataset", None), "train", None)
            self._fingerprint = train_fingerprint(items) if items else None
        return self._fingerprint

    def _check_same_training_data(self, state, path: str) -> None:
        """Resuming continues the same run: the same training images, identities and cameras. Raises ValueError
        on a change; a checkpoint from before fingerprints resumes with a warning."""
        current, stored = self._train_fingerprint(), state.get("train_fingerprint")
        if current is None:
            return
        if stored is None:
            _logger.warning("%s holds no fingerprint of its training data (written before lfem_plugin 0.3): "
                            "resuming without checking that the training set is the one it was trained on", path)
            return
        change = fingerprint_change(stored, current)
        if change:
            raise ValueError(f"the training data changed since {path} was written ({change}): resuming would "
                             f"continue the run on other people (its classifier rows belong to the old identities). "
                             f"To fine-tune on the new data, start a new run (another data.save_dir, no --resume) "
                             f"with model.load_weights {path}; to resume, restore the training data it was "
                             f"trained on")

    def _resume_optimization(self, state, path: str) -> None:
        """Optimiser buffers (momentum, Adam moments) and the schedule's position from the checkpoint; the
        hyperparameters (lr schedule, weight decay, momentum) from the current config, as a fresh run has them at
        that epoch. An unchanged config resumes exactly; a changed one is logged."""
        fresh = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        changed = sorted({k for group, now in zip(self.optimizer.param_groups, fresh) for k, v in now.items()
                          if k != "lr" and group.get(k) != v})
        for group, now in zip(self.optimizer.param_groups, fresh):
            group.update(now)
        changes = getattr(self.scheduler, "changes", lambda s: [])(state["scheduler"]) + changed
        self.scheduler.load_state_dict(state["scheduler"])  # sets the learning rates of the next epoch
        if changes:
            _logger.warning("resuming %s with the current config's optimisation, not the checkpoint's (%s): the "
                            "epochs from %d on run at the learning rates a fresh run of this config has there",
                            path, "; ".join(changes), int(state["epoch"]) + 1)
