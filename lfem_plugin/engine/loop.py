"""The training loop around torchreid's ``Engine.train``/``run``: sampler epochs, throughput, and on a terminal one
compact progress bar per epoch instead of torchreid's ~600-character log line.

Reference: torchreid ``Engine.run`` / ``Engine.train``.
"""
from __future__ import annotations

import datetime
import logging
import sys
import time
from typing import Any, Dict, List, NamedTuple, Optional

import torch

from .. import _torchreid
from ..utils import distributed as D

__all__ = ["TrainLoopMixin", "StepRecord", "read_summaries"]

_TR_METER = _torchreid.root().utils.avgmeter

_progress_logger = logging.getLogger("lfem_plugin.progress")  # full per-iteration terms; the CLI keeps them off a tty


class TrainLoopMixin:
    """``run`` returns the results; ``train`` sets the DDP sampler's epoch, shows the bar on a terminal, records
    train images/s (all views, all ranks) and lets the checkpointing part act at the end of the epoch.

    ``train`` is torchreid's ``Engine.train`` loop with one change: ``forward_backward`` may return its summary as
    device tensors, and they are read to the host together every ``print_freq`` iterations and at the end of the
    epoch (one device sync per ``print_freq`` steps instead of ~28 per step). The log line, the bar and TensorBoard
    then get, step by step, the same numbers torchreid's loop gives them; ``_check_steps`` sees every step's values
    before anything else happens (the non-finite check of :class:`~lfem_plugin.engine.LFEMEngine`).
    """

    num_views: int = 1

    def _init_loop(self) -> None:
        self.train_images_per_s: List[float] = []
        self._save_dir = "log"

    def run(self, save_dir: str = "log", **kwargs: Any) -> Dict[str, Dict[str, Any]]:
        """torchreid's ``Engine.run``; returns the last evaluation's results per target (also ``last_results``)."""
        self._save_dir = save_dir
        if not D.is_main():
            self.writer = _NullWriter()  # TensorBoard, checkpoints and evaluation on rank 0 only
        super().run(save_dir=save_dir, **kwargs)
        return self.last_results

    def train(self, print_freq: int = 10, fixbase_epoch: int = 0, open_layers=None) -> None:
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        start = time.perf_counter()
        self.set_model_mode("train")
        self.two_stepped_transfer_learning(self.epoch, fixbase_epoch, open_layers)
        self.num_batches = len(self.train_loader)
        bar = None
        if sys.stderr.isatty() and D.is_main():  # one compact bar on a terminal; torchreid's log lines otherwise
            bar = _Progress(self.train_loader, f"epoch {self.epoch + 1}/{self.max_epoch}")
        log = _StepLog(self, max(1, print_freq), bar)
        end = time.time()
        for self.batch_idx, data in enumerate(bar if bar is not None else self.train_loader):
            data_time = time.time() - end
            summary = self.forward_backward(data)
            log.add(summary, data_time, time.time() - end)
            if (self.batch_idx + 1) % log.print_freq == 0:
                log.flush()
            end = time.time()
        log.flush()
        self.epoch_loss = log.losses.meters["loss"].avg if "loss" in log.losses.meters else None  # in checkpoints
        self.update_lr()
        images = len(self.train_loader) * self.train_loader.batch_size * self.num_views * D.world_size()
        self.train_images_per_s.append(images / max(time.perf_counter() - start, 1e-9))
        self._end_of_epoch(self._save_dir)

    def _check_steps(self, steps: List["StepRecord"]) -> None:
        """Called with the steps just read to the host, before they are logged; the engines may raise here."""


class StepRecord(NamedTuple):
    """One training step as the loop saw it: where it was and what ``forward_backward`` returned."""

    epoch: int
    batch_idx: int
    global_step: int
    summary: Dict[str, Any]
    data_time: float
    batch_time: float


class _StepLog:
    """Steps whose summaries are still on the device; ``flush`` reads them all at once (``stack().tolist()``) and
    replays them into torchreid's meters, its log line, TensorBoard and the bar, as torchreid's loop would have."""

    def __init__(self, engine, print_freq: int, bar: Optional["_Progress"]) -> None:
        self.engine, self.print_freq, self.bar = engine, print_freq, bar
        self.pending: List[StepRecord] = []
        self.losses, self.batch_time, self.data_time = _TR_METER.MetricMeter(), _TR_METER.AverageMeter(), \
            _TR_METER.AverageMeter()

    def add(self, summary: Dict[str, Any], data_time: float, batch_time: float) -> None:
        engine = self.engine
        self.pending.append(StepRecord(engine.epoch, engine.batch_idx, getattr(engine, "global_step", 0), summary,
                                  data_time, batch_time))

    def flush(self) -> None:
        steps, self.pending = [s._replace(summary=v) for s, v in zip(self.pending, read_summaries(
            [s.summary for s in self.pending]))], []
        self.engine._check_steps(steps)
        for step in steps:
            self._replay(step)

    def _replay(self, step: StepRecord) -> None:
        engine = self.engine
        self.data_time.update(step.data_time)
        self.batch_time.update(step.batch_time)
        self.losses.update(step.summary)
        if (step.batch_idx + 1) % self.print_freq == 0:
            self._report(step)
        if engine.writer is not None:
            n_iter = step.epoch * engine.num_batches + step.batch_idx
            engine.writer.add_scalar("Train/time", self.batch_time.avg, n_iter)
            engine.writer.add_scalar("Train/data", self.data_time.avg, n_iter)
            for name, meter in self.losses.meters.items():
                engine.writer.add_scalar("Train/" + name, meter.avg, n_iter)
            engine.writer.add_scalar("Train/lr", engine.get_current_lr(), n_iter)

    def _report(self, step: StepRecord) -> None:
        """Every ``print_freq`` steps: the bar and the full terms in the log on a terminal, torchreid's line off it."""
        engine, summary = self.engine, step.summary
        if self.bar is None:
            left = (engine.max_epoch - step.epoch) * engine.num_batches - (step.batch_idx + 1)
            print(f"epoch: [{step.epoch + 1}/{engine.max_epoch}][{step.batch_idx + 1}/{engine.num_batches}]\t"
                  f"time {self.batch_time.val:.3f} ({self.batch_time.avg:.3f})\t"
                  f"data {self.data_time.val:.3f} ({self.data_time.avg:.3f})\t"
                  f"eta {datetime.timedelta(seconds=int(self.batch_time.avg * left))}\t"
                  f"{self.losses}\tlr {engine.get_current_lr():.6f}")
            return
        shown = {"loss": f"{summary['loss']:.3f}", "acc": f"{summary.get('acc', 0.0):.1f}",
                 "lr": f"{engine.get_current_lr():.2e}"}
        gates = [v for k, v in summary.items() if k.startswith("gate/")]
        if gates:
            shown["gate"] = f"{sum(gates) / len(gates):.2f}"
        self.bar.set_postfix(shown)
        terms = "  ".join(f"{k} {v:.4f}" for k, v in summary.items())
        _progress_logger.info("epoch %d/%d iter %d/%d: %s  lr %.6f", step.epoch + 1, engine.max_epoch,
                              step.batch_idx + 1, engine.num_batches, terms, engine.get_current_lr())


def read_summaries(summaries: List[Dict[str, Any]]) -> List[Dict[str, float]]:
    """The step summaries with every tensor read to the host in one transfer (floats pass through); ``[]`` in,
    ``[]`` out. Each tensor must hold one value."""
    tensors = [v.detach().float().reshape(()) for s in summaries for v in s.values() if torch.is_tensor(v)]
    values = iter(torch.stack(tensors).tolist() if tensors else [])
    return [{k: next(values) if torch.is_tensor(v) else float(v) for k, v in s.items()} for s in summaries]


class _Progress:
    """A data loader seen through a tqdm bar (same length and iteration)."""

    def __init__(self, loader, desc: str) -> None:
        self.loader, self.desc = loader, desc
        self.batch_size = loader.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        from tqdm import tqdm
        self.bar = tqdm(self.loader, desc=self.desc, leave=False, unit="batch")
        return iter(self.bar)

    def set_postfix(self, values: Dict[str, str]) -> None:
        if getattr(self, "bar", None) is not None:
            self.bar.set_postfix(values, refresh=False)


class _NullWriter:
    """Stands in for TensorBoard's SummaryWriter on ranks other than 0."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass
