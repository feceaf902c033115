"""``lfem-reid test`` for plugin models: a checkpoint evaluated on any target from the checkpoint alone.

The model is rebuilt from the checkpoint (:func:`~lfem_plugin.tools.inference.rebuild_model`: identities, SIE table
and sizes are the checkpoint's), and each target's query and gallery lists are read on their own
(:func:`~lfem_plugin.data.test_sets.load_test_set`): no training split is built and no classifier is sized from the
data, so a test-only folder, another dataset or another image size (resized to the model's input) is a target like
any other. Features come from :func:`~lfem_plugin.tools.inference.extract_features`, the function behind
``lfem-reid extract``, and are scored by the engine's evaluator.

SIE on a target: a target the checkpoint was trained on (one of its stored ``data.sources``, and for a Market-layout
name the same ``data.market_layout.folder``) passes its own camera ids; any other target gets
``test.cross_domain_sie`` (default ``mean``: the mean SIE row, the expected embedding over the training cameras);
``test.use_cameras False`` turns SIE off everywhere.

Reference: fast-reid ``DefaultTrainer.test`` (a checkpoint evaluated on every ``DATASETS.TESTS``); torchreid
``Engine.test``.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
from yacs.config import CfgNode

from .. import _torchreid
from ..config import load_config, market_layout_kwargs
from ..data.market_layout import SAME_CAMERAS
from ..data.test_sets import load_test_set
from ..engine.evaluation import print_results, query_gallery_distances
from ..metrics import evaluate_rank
from ..models.sie import camera_argument
from ..utils.checkpoint import load_checkpoint
from .inference import extract_features, rebuild_model

__all__ = ["evaluate_checkpoint", "trained_on", "target_sie", "Evaluated"]

_logger = logging.getLogger(__name__)


class Evaluated(NamedTuple):
    """What :func:`evaluate_checkpoint` gives: per target ``{'mAP', 'cmc', 'sie'}`` (fractions; CMC to rank 50),
    per target its query items (torchreid's ``(path, pid, camid, dsetid)``), and the rebuilt model (eval mode)."""

    results: Dict[str, Dict[str, Any]]
    queries: Dict[str, List[tuple]]
    model: torch.nn.Module


def trained_on(cfg: CfgNode, trained: CfgNode, name: str) -> bool:
    """Was the checkpoint (its stored config ``trained``) trained on target ``name`` of ``cfg``: the same cameras?"""
    sources = list(trained.data.sources)
    if name not in sources and SAME_CAMERAS.get(name) not in sources:
        return False
    return not name.startswith("market_layout") or \
        cfg.data.market_layout.folder == trained.data.market_layout.folder


def target_sie(cfg: CfgNode, trained: CfgNode, name: str, uses_sie: bool) -> str:
    """How target ``name``'s camera ids reach SIE: ``'cameras'``, ``test.cross_domain_sie`` or ``'off'``."""
    if not uses_sie or not cfg.test.use_cameras:
        return "off"
    return "cameras" if trained_on(cfg, trained, name) else cfg.test.cross_domain_sie


def evaluate_checkpoint(cfg: CfgNode, weights: str, explicit: Optional[Sequence[str]],
                        device: str = "cpu") -> Evaluated:
    """Evaluate checkpoint ``weights`` on every ``cfg.data.targets``, printing torchreid's result block for each;
    ranked lists in ``data.save_dir/visrank_<target>/`` with ``test.visrank``. ``explicit``: the user's override
    keys (:func:`~lfem_plugin.tools.inference.rebuild_model`; None: build from ``cfg``, a ``--config-file``).

    Raises:
        ValueError / FileNotFoundError: a target that is not registered or whose folder is missing (see
            :func:`~lfem_plugin.data.test_sets.load_test_set`); a target camera without an SIE row with
            ``test.cross_domain_sie cameras`` (the error names the known ids).
    """
    state = load_checkpoint(weights)
    model = rebuild_model(state, cfg, weights, explicit).to(device).eval()
    trained = load_config(None, (), text=state["config"]) if state.get("config") else cfg
    results, queries = {}, {}
    for name in cfg.data.targets:
        query, gallery = load_test_set(name, cfg.data.root, market_layout_kwargs(cfg), cfg.data.skip_bad_images)
        sie = target_sie(cfg, trained, name, model.uses_sie)
        qf, gf = (_features(model, items, sie, cfg, device, f"evaluation of {name} ({split})")
                  for items, split in ((query, "query"), (gallery, "gallery")))
        distmat = query_gallery_distances(qf, gf, cfg.test.dist_metric, cfg.test.normalize_feature, cfg.test.rerank)
        cmc, mAP = evaluate_rank(distmat, _column(query, 1), _column(gallery, 1), _column(query, 2),
                                 _column(gallery, 2))
        results[name] = {"cmc": cmc.tolist(), "mAP": float(mAP), "sie": sie}
        _logger.info("%s: mAP %.1f%%  R1: %.1f%%  (SIE: %s)", name, 100 * mAP, 100 * cmc[0], sie)
        print_results(mAP, cmc, list(cfg.test.ranks))
        queries[name] = query
        if cfg.test.visrank:
            _torchreid.root().utils.visualize_ranked_results(
                distmat, (query, gallery), "image", width=model.img_size[1], height=model.img_size[0],
                topk=cfg.test.visrank_topk, save_dir=os.path.join(cfg.data.save_dir, "visrank_" + name))
    return Evaluated(results, queries, model)


def _column(items: List[tuple], index: int) -> np.ndarray:
    """Field ``index`` of every item (1: pid, 2: camid) as ints."""
    return np.asarray([int(item[index]) for item in items])


def _features(model, items: List[tuple], sie: str, cfg: CfgNode, device: str, what: str) -> torch.Tensor:
    """``(N, D)`` features of ``items`` at the model's input size, with the cameras ``sie`` gives."""
    cameras = camera_argument([int(item[2]) for item in items], sie)
    feats, _ = extract_features(model, [item[0] for item in items], *model.img_size, tuple(cfg.data.norm_mean),
                                tuple(cfg.data.norm_std), cameras=cameras, batch_size=cfg.test.batch_size,
                                device=device, what=what)
    return torch.from_numpy(feats)
