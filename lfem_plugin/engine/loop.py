"""The training loop around torchreid's ``Engine.train``/``run``: sampler epochs, throughput, and on a terminal one
compact progress bar per epoch instead of torchreid's ~600-character log line.

Reference: torchreid ``Engine.run`` / ``Engine.train``.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Dict, List

from ..utils import distributed as D

__all__ = ["TrainLoopMixin"]

_progress_logger = logging.getLogger("lfem_plugin.progress")  # full per-iteration terms; the CLI keeps them off a tty


class TrainLoopMixin:
    """``run`` returns the results; ``train`` sets the DDP sampler's epoch, shows the bar on a terminal, records
    train images/s (all views, all ranks) and lets the checkpointing part act at the end of the epoch."""

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
        loader = self.train_loader
        if sys.stderr.isatty() and D.is_main():  # one compact bar on a terminal; torchreid's log lines otherwise
            self.train_loader = _Progress(loader, f"epoch {self.epoch + 1}/{self.max_epoch}")
            self.forward_backward = _CompactSummary(self.forward_backward, self.train_loader, self, print_freq)
            print_freq = sys.maxsize  # torchreid's ~600-character line would interleave with the bar
        try:
            super().train(print_freq, fixbase_epoch, open_layers)
        finally:
            self.train_loader = loader
            self.__dict__.pop("forward_backward", None)
        images = len(self.train_loader) * self.train_loader.batch_size * self.num_views * D.world_size()
        self.train_images_per_s.append(images / max(time.perf_counter() - start, 1e-9))
        self._end_of_epoch(self._save_dir)


class _CompactSummary:
    """Wraps ``forward_backward`` on a terminal: loss, acc, lr and the mean LFEM gate go to the bar; every
    ``print_freq`` iterations the full terms go to the ``lfem_plugin.progress`` logger (the log file)."""

    def __init__(self, step, bar: "_Progress", engine, print_freq: int) -> None:
        self.step, self.bar, self.engine, self.print_freq = step, bar, engine, max(1, print_freq)

    def __call__(self, data):
        summary = self.step(data)
        engine = self.engine
        shown = {"loss": f"{summary['loss']:.3f}", "acc": f"{summary.get('acc', 0.0):.1f}",
                 "lr": f"{engine.get_current_lr():.2e}"}
        gates = [v for k, v in summary.items() if k.startswith("gate/")]
        if gates:
            shown["gate"] = f"{sum(gates) / len(gates):.2f}"
        self.bar.set_postfix(shown)
        if (engine.batch_idx + 1) % self.print_freq == 0:
            terms = "  ".join(f"{k} {v:.4f}" for k, v in summary.items())
            _progress_logger.info("epoch %d/%d iter %d/%d: %s  lr %.6f", engine.epoch + 1, engine.max_epoch,
                                  engine.batch_idx + 1, engine.num_batches, terms, engine.get_current_lr())
        return summary


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
