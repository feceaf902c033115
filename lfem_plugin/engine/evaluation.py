"""Evaluation shared by every engine of the plugin: features (with camera ids for SIE), DDP shards, the fast
evaluator, re-ranking, torchreid's result block.

One mixin for :class:`~lfem_plugin.engine.LFEMEngine` and torchreid's own engines alike, so every model of a
comparison is scored by the same code.

Reference: torchreid ``Engine`` hooks ``test``, ``parse_data_for_eval``, ``extract_features``, ``_evaluate``.
"""
from __future__ import annotations

import logging
import os.path as osp
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .. import _torchreid
from ..metrics import compute_distance_matrix, evaluate_rank, re_ranking
from ..models.interface import ReIDModel
from ..models.sie import camera_argument
from ..utils import distributed as D
from ..utils.checkpoint import rng_state, set_rng_state
from ..utils.finite import require_finite_features

__all__ = ["EvaluationMixin", "print_results", "query_gallery_distances"]

_logger = logging.getLogger(__name__)


def print_results(mAP: float, cmc, ranks) -> None:
    """The result block torchreid's engines print (same lines, same format)."""
    print("** Results **")
    print(f"mAP: {mAP:.1%}")
    print("CMC curve")
    for r in ranks:
        if r <= len(cmc):
            print(f"Rank-{r:<3}: {cmc[r - 1]:.1%}")


class EvaluationMixin:
    """Evaluation that passes camera ids to SIE models (``use_cameras``; per target ``target_sie``), shards feature
    extraction under DDP, scores with :func:`~lfem_plugin.metrics.evaluate_rank`, keeps every target's results in
    ``last_results`` and leaves the RNG streams as it found them."""

    use_cameras: bool = False

    def _init_evaluation(self, use_cameras: bool, target_sie: Optional[Dict[str, str]] = None,
                         eval_amp: str = "off") -> None:
        if eval_amp not in ("bf16", "off"):
            raise ValueError(f"test.amp={eval_amp!r}; choices: 'bf16', 'off'")
        self.device = torch.device("cuda" if self.use_gpu else "cpu")
        self.eval_amp = eval_amp if self.device.type == "cuda" else "off"
        self.use_cameras = use_cameras
        self.target_sie = dict(target_sie or {})
        self.last_results: Dict[str, Dict[str, Any]] = {}

    def sie_mode(self, dataset_name: str) -> str:
        """How the camera ids of target ``dataset_name`` reach SIE: ``'cameras'`` (its own ids), ``'mean'`` (the
        mean SIE row for every image) or ``'off'`` (no SIE term). See ``test.cross_domain_sie``."""
        return self.target_sie.get(dataset_name, "cameras") if self.use_cameras else "off"

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

    def parse_data_for_eval(self, data: Dict[str, Any]):
        return data["img"], data["pid"], data["camid"]

    def extract_features(self, images: torch.Tensor, cameras: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Features of one batch; ``cameras`` reach models that take them (SIE)."""
        model = D.unwrap(self.model)
        if isinstance(model, ReIDModel):
            return model(images, camera=None if cameras is None else cameras.to(images.device)).float()
        return model(images).float()

    @torch.no_grad()
    def _extract(self, loader, sie: Optional[str] = None):
        """Features, pids and cameras of ``loader``, with ``sie`` (default: ``'cameras'`` if ``use_cameras`` else
        ``'off'``); under DDP each rank takes a contiguous shard and the shards are gathered in rank order, so every
        rank ends with the same arrays a single process would have."""
        sie = sie or ("cameras" if self.use_cameras else "off")
        feats, pids, cams = [], [], []
        for data in D.shard_loader(loader):
            images, pid, cam = self.parse_data_for_eval(data)
            images = images.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.eval_amp == "bf16"):
                feats.append(self.extract_features(images, camera_argument(cam, sie)).cpu())
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
        start, sie = time.perf_counter(), self.sie_mode(dataset_name)
        qf, q_pids, q_cams = self._extract(query_loader, sie)
        gf, g_pids, g_cams = self._extract(gallery_loader, sie)
        for split, feats, loader in (("query", qf, query_loader), ("gallery", gf, gallery_loader)):
            if feats is not None:
                require_finite_features(feats, _image_paths(loader), f"evaluation of {dataset_name} ({split})")
        if not D.is_main():
            return 0.0, 0.0
        distmat = query_gallery_distances(qf, gf, dist_metric, normalize_feature, rerank)
        cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams)
        self.last_results[dataset_name] = {"cmc": cmc.tolist(), "mAP": float(mAP),
                                           "eval_s": time.perf_counter() - start}
        if dataset_name in self.target_sie:
            self.last_results[dataset_name]["sie"] = sie
        ranks_text = "  ".join(f"R{r}: {cmc[r - 1]:.1%}" for r in ranks if r <= len(cmc))
        note = f"  (SIE: {sie})" if dataset_name in self.target_sie and sie != "cameras" else ""
        _logger.info("%s: mAP %.1f%%  %s%s", dataset_name, 100 * mAP, ranks_text, note)
        print_results(mAP, cmc, ranks)
        if visrank:
            dm = self.datamanager
            _torchreid.root().utils.visualize_ranked_results(
                distmat, dm.fetch_test_loaders(dataset_name), dm.data_type, width=dm.width, height=dm.height,
                topk=visrank_topk, save_dir=osp.join(save_dir, "visrank_" + dataset_name))
        return cmc[0], mAP


def _image_paths(loader) -> Optional[List[str]]:
    """The image paths of an evaluation loader, in its (unshuffled) order; None when its dataset lists none."""
    data = getattr(getattr(loader, "dataset", None), "data", None)
    try:
        return [str(item[0]) for item in data] if data is not None else None
    except (TypeError, IndexError):
        return None


def query_gallery_distances(qf: torch.Tensor, gf: torch.Tensor, metric: str = "euclidean", normalize: bool = True,
                            rerank: bool = False) -> np.ndarray:
    """Query-gallery distances of the evaluation (and of ``lfem-reid search``): features L2-normalised if asked,
    then ``metric``; with ``rerank`` torchreid's k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3)."""
    if normalize:
        qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
    distmat = compute_distance_matrix(qf, gf, metric)
    if rerank:
        return re_ranking(distmat, compute_distance_matrix(qf, qf, metric), compute_distance_matrix(gf, gf, metric))
    return distmat.numpy()
