"""torchreid engine subclass for the LFEM model: multi-view batches, camera ids, AMP, exact resume.

It overrides torchreid's hooks (``forward_backward``, ``parse_data_for_eval``, ``extract_features``,
``_evaluate``, ``save_model``, ``train``) and keeps ``Engine.run``'s loop, logging and test path.

Reference: torchreid ``Engine`` (Zhou & Xiang, "Torchreid: A Library for Deep Learning Person Re-Identification
in Pytorch", 2019); LFEM paper Sec. 3.4 and 4.2.
"""
from __future__ import annotations

import logging
import math
import os.path as osp
import sys
import time
from contextlib import nullcontext
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _torchreid
from . import distributed as D
from .checkpoint import (NonFiniteStateError, load_checkpoint, newest_finite_checkpoint, rng_state, save_checkpoint,
                         set_rng_state)
from .losses import MultiBranchLoss
from .metrics import compute_distance_matrix, evaluate_rank, re_ranking

__all__ = ["LFEMEngine", "NonFiniteLossError", "EvalCheckpointMixin", "TorchreidSoftmaxEngine",
           "TorchreidTripletEngine", "print_results"]

_logger = logging.getLogger(__name__)
_TR = _torchreid.root()


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or weights; no non-finite checkpoint is ever written."""


# fp16 AMP: GradScaler skips a step whose gradients overflow and lowers its scale; that is not a failure. A loss
# that stays non-finite for this many consecutive steps is (the forward itself overflows).
MAX_SKIPPED_FP16_STEPS = 20


def _non_finite_advice(save_dir: str) -> str:
    newest = newest_finite_checkpoint(osp.join(save_dir, "model"))
    where = (f"the newest finite checkpoint is {newest}" if newest else f"no finite checkpoint exists in {save_dir}")
    return f"{where}. Lower train.lr or set lfem.grad_clip, then resume from it (--resume PATH) or start again"


class EvalCheckpointMixin:
    """Evaluation (fast evaluator, camera ids to SIE, mAP kept in ``last_results``), train throughput, atomic
    ``weights_only`` checkpoints and exact resume, for the plugin engine and torchreid's own engines alike, so
    every model of a comparison is evaluated and saved by the same code.

    Reference: torchreid ``Engine`` hooks (``parse_data_for_eval``, ``extract_features``, ``_evaluate``,
    ``save_model``).
    """

    use_cameras: bool = False
    scaler = None
    num_views: int = 1

    def _init_mixin(self, use_cameras: bool, checkpoint_period: int, save_checkpoints: bool = True,
                    config_text: str = "") -> None:
        self.device = torch.device("cuda" if self.use_gpu else "cpu")
        self.use_cameras = use_cameras
        self.checkpoint_period = checkpoint_period
        self.save_checkpoints = save_checkpoints
        self.config_text = config_text
        self.resumed_epoch = 0
        self.skipped_steps = 0
        self.last_results: Dict[str, Dict[str, Any]] = {}
        self.train_images_per_s: List[float] = []
        self._eval_cameras: Optional[torch.Tensor] = None
        self._save_dir = "log"
        self.global_step = 0

    def train(self, print_freq: int = 10, fixbase_epoch: int = 0, open_layers=None) -> None:
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        start = time.perf_counter()
        loader = self.train_loader
        bar = sys.stderr.isatty() and D.is_main()  # one compact bar on a terminal; torchreid's log lines otherwise
        if bar:
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
        if self.checkpoint_period and (self.epoch + 1) % self.checkpoint_period == 0:
            self.save_model(self.epoch, float("nan"), self._save_dir)

    def run(self, save_dir: str = "log", **kwargs: Any) -> Dict[str, Dict[str, Any]]:
        """torchreid's ``Engine.run``; returns the last evaluation's results per target (also ``last_results``)."""
        self._save_dir = save_dir
        if not D.is_main():
            self.writer = _NullWriter()  # TensorBoard, checkpoints and evaluation on rank 0 only
        super().run(save_dir=save_dir, **kwargs)
        return self.last_results

    def test(self, *args: Any, **kwargs: Any):
        """torchreid's test; under DDP every rank extracts its shard of features and rank 0 scores them.

        Evaluation leaves the RNG streams as it found them (its data-loader iterators draw seeds from the torch
        RNG): training after an evaluation continues exactly as a run resumed from that epoch's checkpoint does.
        """
        state = rng_state()
        try:
            result = super().test(*args, **kwargs)
        finally:
            set_rng_state(state)
        D.barrier()
        return result if D.is_main() else 0.0

    # ---- evaluation --------------------------------------------------------------------------------------------
    def parse_data_for_eval(self, data: Dict[str, Any]):
        self._eval_cameras = data["camid"] if self.use_cameras else None
        return data["img"], data["pid"], data["camid"]

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        cameras = None if self._eval_cameras is None else self._eval_cameras.to(images.device)
        model = _unwrap(self.model)
        if hasattr(model, "forward_branches"):
            return model(images, camera=cameras).float()
        return model(images).float()

    @torch.no_grad()
    def _extract(self, loader):
        """Features, pids and cameras of ``loader``; under DDP each rank takes a contiguous shard and the shards
        are gathered in rank order, so every rank ends with the same arrays a single process would have."""
        loader = D.shard_loader(loader)
        feats, pids, cams = [], [], []
        for data in loader:
            images, pid, cam = self.parse_data_for_eval(data)
            feats.append(self.extract_features(images.to(self.device)).cpu())
            pids.append(pid)
            cams.append(cam)
        feats, pids, cams = (D.gather_objects(torch.cat(x) if x else None) for x in (feats, pids, cams))
        return feats, pids.numpy(), cams.numpy()

    def _evaluate(self, dataset_name: str = "", query_loader=None, gallery_loader=None,
                  dist_metric: str = "euclidean", normalize_feature: bool = False, visrank: bool = False,
                  visrank_topk: int = 10, save_dir: str = "", use_metric_cuhk03: bool = False,
                  ranks: List[int] = (1, 5, 10, 20), rerank: bool = False):
        if use_metric_cuhk03:
            raise ValueError("use_metric_cuhk03=True: CUHK03's single-gallery-shot metric is not implemented by the "
                             "plugin's evaluator (it scores the Market-1501/Duke protocol); run without it")
        start = time.perf_counter()
        qf, q_pids, q_cams = self._extract(query_loader)
        gf, g_pids, g_cams = self._extract(gallery_loader)
        if not D.is_main():
            return 0.0, 0.0
        if normalize_feature:
            qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
        distmat = compute_distance_matrix(qf, gf, dist_metric)
        if rerank:  # torchreid's k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3), computed with torch
            distmat = re_ranking(distmat, compute_distance_matrix(qf, qf, dist_metric),
                                 compute_distance_matrix(gf, gf, dist_metric))
        distmat = np.asarray(distmat)
        cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams)
        self.last_results[dataset_name] = {"cmc": cmc.tolist(), "mAP": float(mAP),
                                           "eval_s": time.perf_counter() - start}
        ranks_text = "  ".join(f"R{r}: {cmc[r - 1]:.1%}" for r in ranks if r <= len(cmc))
        _logger.info("%s: mAP %.1f%%  %s", dataset_name, 100 * mAP, ranks_text)
        print_results(mAP, cmc, ranks)
        if visrank:
            _TR.utils.visualize_ranked_results(distmat, self.datamanager.fetch_test_loaders(dataset_name),
                                               self.datamanager.data_type, width=self.datamanager.width,
                                               height=self.datamanager.height, topk=visrank_topk,
                                               save_dir=osp.join(save_dir, "visrank_" + dataset_name))
        return cmc[0], mAP

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def save_model(self, epoch: int, rank1: float, save_dir: str, is_best: bool = False) -> None:
        """Atomic checkpoint ``save_dir/model/model.pth.tar-<epoch+1>`` that resumes exactly (rank 0 writes)."""
        if not D.is_main() or not self.save_checkpoints:
            return
        if epoch + 1 < self.resumed_epoch:  # never overwrite the run's future with its past
            raise RuntimeError(f"refusing to write the epoch-{epoch + 1} checkpoint of a run resumed at epoch "
                               f"{self.resumed_epoch}")
        state = {"state_dict": _unwrap(self.model).state_dict(), "epoch": epoch + 1,
                 "rank1": float(rank1) if rank1 is not None and not math.isnan(float(rank1)) else -1.0,
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                 "rng": rng_state(), "global_step": self.global_step,
                 "results": {k: {"mAP": v["mAP"], "cmc": v["cmc"][:50]} for k, v in self.last_results.items()}}
        if self.config_text:
            state["config"] = self.config_text
        try:
            path = save_checkpoint(state, osp.join(save_dir, "model", f"model.pth.tar-{epoch + 1}"))
        except NonFiniteStateError as err:
            raise NonFiniteLossError(f"epoch {epoch + 1}: training diverged: {err}; "
                                     f"{_non_finite_advice(save_dir)}") from None
        _logger.info("checkpoint saved to %s", path)

    def resume(self, path: str) -> int:
        """Restore model, optimiser, scheduler, scaler and RNG states; returns the epoch to start from."""
        state = load_checkpoint(path)
        _unwrap(self.model).load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") and self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.global_step = int(state.get("global_step", 0))
        self.resumed_epoch = int(state["epoch"])
        _logger.info("resumed from %s (epoch %d)", path, state["epoch"])
        return int(state["epoch"])


class LFEMEngine(EvalCheckpointMixin, _TR.engine.Engine):
    """Trains :class:`~lfem_plugin.models.LFEMViT` (or any model returning ``forward_branches``) in torchreid.

    Reference: torchreid ``Engine``; LFEM paper Sec. 3.4 (seven-branch CE + triplet).

    Args:
        datamanager: a torchreid ``ImageDataManager`` whose train transform returns a list of views.
        model: the model (already on its device).
        optimizer: e.g. :func:`lfem_plugin.optim.build_optimizer`.
        scheduler: e.g. :class:`lfem_plugin.optim.WarmupCosineLR` (``step()`` once per epoch).
        criterion: :class:`MultiBranchLoss` over the model's branches.
        use_gpu: run on CUDA when available.
        amp: ``'bf16'``, ``'fp16'`` (with a GradScaler) or ``'off'``; always off on CPU.
        grad_clip: max gradient norm (0: off).
        use_cameras: pass query/gallery camera ids to the model at evaluation (SIE).
        checkpoint_period: also checkpoint every N epochs (0: only at evaluations and the end).
        save_checkpoints: write checkpoints at all (comparisons turn it off).
        config_text: the run's config (YAML), stored in every checkpoint.
    """

    def __init__(self, datamanager, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 criterion: MultiBranchLoss, use_gpu: bool = True, amp: str = "bf16", grad_clip: float = 0.0,
                 use_cameras: bool = True, checkpoint_period: int = 0, save_checkpoints: bool = True,
                 config_text: str = "") -> None:
        super().__init__(datamanager, use_gpu)
        self.model, self.optimizer, self.scheduler, self.criterion = model, optimizer, scheduler, criterion
        self.register_model("model", model, optimizer, scheduler)
        if amp not in ("bf16", "fp16", "off"):
            raise ValueError(f"amp={amp!r}; choices: 'bf16', 'fp16', 'off'")
        self.amp = amp if self.use_gpu else "off"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        self.grad_clip = grad_clip
        self.num_views = getattr(_unwrap(model), "num_views", 1)
        self._init_mixin(use_cameras, checkpoint_period, save_checkpoints, config_text)

    # ---- training ----------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.amp == "off":
            return nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    def forward_backward(self, data: Dict[str, Any]) -> Dict[str, float]:
        images = data["img"] if isinstance(data["img"], (list, tuple)) else [data["img"]]
        images = torch.stack([v.to(self.device, non_blocking=True) for v in images])
        pids = data["pid"].to(self.device)
        cameras = data["camid"].to(self.device)
        with self._autocast():
            out = self.model(images, camera=cameras, branch_features=True)
            # Under DDP, heads and losses see the global batch (BNNeck statistics, batch-hard mining), as a
            # single process would; gradients flow back to each rank through the differentiable gather.
            features = [D.all_gather_cat(f) for f in out.features]
            pids = D.all_gather_cat(pids)
            logits = _unwrap(self.model).classify(out.names, features)
            loss, terms = self.criterion(logits, features, pids, out.names)
        self._check_finite(loss, terms)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.global_step += 1
        summary = {"loss": loss.item(), "acc": (logits[0].argmax(1) == pids).float().mean().item() * 100}
        summary.update({k: v.item() for k, v in terms.items()})
        if out.gates is not None:
            summary.update({f"gate/{k + 1}": g.item() for k, g in enumerate(out.gates.float().mean(0))})
        return summary

    def _check_finite(self, loss: torch.Tensor, terms: Dict[str, torch.Tensor]) -> None:
        """Stop on a non-finite loss, naming the newest finite checkpoint; under fp16 AMP, GradScaler skips such a
        step (its gradients overflow) and only a run of them is a failure."""
        if torch.isfinite(loss):
            self.skipped_steps = 0
            return
        self.skipped_steps += 1
        if self.amp == "fp16" and self.skipped_steps < MAX_SKIPPED_FP16_STEPS:
            _logger.warning("non-finite loss at step %d under fp16: GradScaler skips the step", self.global_step + 1)
            return
        bad = {k: float(v.detach()) for k, v in terms.items()}
        raise NonFiniteLossError(f"non-finite loss at epoch {self.epoch + 1}, iteration {self.batch_idx + 1} "
                                 f"(step {self.global_step + 1}): total={float(loss.detach())}, terms={bad}. "
                                 f"Training stopped; {_non_finite_advice(self._save_dir)}.")

def print_results(mAP: float, cmc, ranks) -> None:
    """The result block torchreid's engines print (same lines, same format)."""
    print("** Results **")
    print(f"mAP: {mAP:.1%}")
    print("CMC curve")
    for r in ranks:
        if r <= len(cmc):
            print(f"Rank-{r:<3}: {cmc[r - 1]:.1%}")


_progress_logger = logging.getLogger("lfem_plugin.progress")  # full per-iteration terms; the CLI keeps them off a tty


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


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


class TorchreidSoftmaxEngine(EvalCheckpointMixin, _TR.engine.ImageSoftmaxEngine):
    """torchreid's ``ImageSoftmaxEngine`` with the plugin's evaluation and checkpoints (for fair comparisons).

    Reference: torchreid ``ImageSoftmaxEngine``.
    """

    def __init__(self, *args: Any, checkpoint_period: int = 0, save_checkpoints: bool = True, config_text: str = "",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_mixin(False, checkpoint_period, save_checkpoints, config_text)


class TorchreidTripletEngine(EvalCheckpointMixin, _TR.engine.ImageTripletEngine):
    """torchreid's ``ImageTripletEngine`` with the plugin's evaluation and checkpoints (for fair comparisons).

    Reference: torchreid ``ImageTripletEngine``.
    """

    def __init__(self, *args: Any, checkpoint_period: int = 0, save_checkpoints: bool = True, config_text: str = "",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_mixin(False, checkpoint_period, save_checkpoints, config_text)
