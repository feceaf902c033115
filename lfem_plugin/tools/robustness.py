"""Occlusion-robustness curves: rank-1 / mAP of any trained checkpoint on any Market-layout test folder while
synthetic occluders of a known kind, area and position cover the queries (the gallery stays clean).

Papers report one number per occluded benchmark; a curve shows how a model degrades as occlusion grows, by kind of
occluder and by where it sits. The gallery's features are extracted once; each point re-extracts only its occluded
queries. Area 0 is the plain evaluation of the folder (same features, same protocol: torchreid's, gallery entries of
the query's identity and camera removed). Summary per curve: the area under mAP(area) relative to the clean mAP over
the swept range (1.0: no degradation; trapezoid rule).

Reference: torchreid ``evaluate_rank`` (the protocol); the occluders: :mod:`lfem_plugin.data.synthetic_occluders`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..data.io import read_image
from ..data.market_layout import scan_market_split
from ..data.synthetic_occluders import KINDS, POSITIONS, band_box, draw_occluder
from ..data.transforms import build_test_transform
from ..metrics.distance import compute_distance_matrix
from ..metrics.rank import evaluate_rank
from ..models.sie import camera_argument

__all__ = ["Sweep", "read_test_folder", "run_sweep", "curve_summary", "DEFAULT_AREAS", "load_any", "write_outputs",
           "occlude_queries", "format_table"]

_logger = logging.getLogger(__name__)
DEFAULT_AREAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
Item = Tuple[str, int, int]


@dataclass(frozen=True)
class Sweep:
    """What the curves sweep: occluder ``kinds``, ``positions`` and query ``areas`` (fractions in [0, 1), ascending,
    starting at 0), drawn from ``seed``. ValueError on anything else."""

    kinds: Tuple[str, ...] = KINDS
    positions: Tuple[str, ...] = POSITIONS
    areas: Tuple[float, ...] = DEFAULT_AREAS
    seed: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, values, choices in (("kind", self.kinds, KINDS), ("position", self.positions, POSITIONS)):
            bad = [v for v in values if v not in choices]
            if bad or not values:
                raise ValueError(f"occluder {name}s {list(values)}: choose one or more of {', '.join(choices)}")
        areas = list(self.areas)
        if not areas or areas[0] != 0.0 or areas != sorted(set(areas)) or not all(0 <= a < 1 for a in areas):
            raise ValueError(f"areas {areas}: ascending distinct fractions in [0, 1) starting at 0 (the clean point),"
                             f" e.g. 0 0.1 0.2 0.3 0.4 0.5 0.6")


def read_test_folder(folder: str | Path, query: str = "query", gallery: str = "bounding_box_test"
                     ) -> Tuple[List[Item], List[Item]]:
    """``(query, gallery)`` items ``(path, pid, camid)`` of a Market-layout test folder (a training split is not
    needed). FileNotFoundError naming what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"test folder {folder} does not exist; give a Market-layout folder with {query}/ and "
                                f"{gallery}/ (NNNN_cC_*.jpg images)")
    splits = []
    for name in (query, gallery):
        if not (folder / name).is_dir():
            raise FileNotFoundError(f"{folder} has no {name}/ folder; a Market-layout test folder holds {query}/ "
                                    f"and {gallery}/")
        splits.append(scan_market_split(folder / name))
    return splits[0], splits[1]


class _Features:
    """Features of images (arrays) as the model was trained: resize, normalise, the camera reading, batches."""

    def __init__(self, model: torch.nn.Module, cfg, sie: str, batch_size: int, device: str) -> None:
        self.model, self.device, self.batch_size = model, device, batch_size
        self.transform = build_test_transform(cfg.data.height, cfg.data.width, cfg.data.norm_mean, cfg.data.norm_std)
        self.plugin = hasattr(model, "uses_sie")
        self.sie_mode = sie if self.plugin and model.uses_sie else "off"

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray], cameras: Sequence[int]) -> torch.Tensor:
        cams = camera_argument(list(cameras), self.sie_mode)
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.stack([self.transform(Image.fromarray(a)) for a in images[i:i + self.batch_size]])
            x = x.to(self.device)
            if self.plugin:
                cam = None if cams is None else torch.tensor(cams[i:i + self.batch_size], device=self.device)
                out.append(self.model(x, camera=cam).float().cpu())
            else:
                out.append(self.model(x).float().cpu())
        feats = torch.cat(out)
        if not torch.isfinite(feats).all():
            raise ValueError("the model gave non-finite features; is the checkpoint damaged?")
        return feats


def _score(qf, gf, query: List[Item], gallery: List[Item], metric: str, normalize: bool) -> Dict[str, float]:
    if normalize:
        qf, gf = torch.nn.functional.normalize(qf, dim=1), torch.nn.functional.normalize(gf, dim=1)
    dist = compute_distance_matrix(qf, gf, metric)
    cmc, mean_ap = evaluate_rank(dist.numpy(), *(np.array([it[k] for it in items]) for k, items in
                                                 ((1, query), (1, gallery), (2, query), (2, gallery))))
    return {"R1": round(100 * float(cmc[0]), 2), "R5": round(100 * float(cmc[min(4, len(cmc) - 1)]), 2),
            "mAP": round(100 * float(mean_ap), 2)}


def occlude_queries(images: List[np.ndarray], pids: np.ndarray, donors: List[np.ndarray], donor_pids: np.ndarray,
                    kind: str, position: str, area: float, area_index: int, seed: int
                    ) -> Tuple[List[np.ndarray], List[Tuple[int, int, int, int]]]:
    """Every query with one occluder; the box depends on (seed, position, area, query) only, so each kind covers the
    same pixels, and the fill also on the kind."""
    out, boxes = [], []
    for i, image in enumerate(images):
        box_rng = np.random.default_rng([seed, POSITIONS.index(position), area_index, i])
        box = band_box(image.shape[0], image.shape[1], area, position, box_rng)
        fill_rng = np.random.default_rng([seed, POSITIONS.index(position), area_index, i, 1 + KINDS.index(kind)])
        donor = donors[_donor_index_against(pids[i], donor_pids, fill_rng)]
        out.append(draw_occluder(image, donor, box, kind, fill_rng))
        boxes.append(box)
    return out, boxes


def _donor_index_against(pid: int, donor_pids: np.ndarray, rng: np.random.Generator) -> int:
    others = np.flatnonzero(donor_pids != pid)
    if others.size == 0:
        raise ValueError("every donor image shows the query's identity; give --donors a folder of other people")
    return int(others[rng.integers(0, others.size)])


def curve_summary(areas: Sequence[float], values: Sequence[float]) -> Optional[float]:
    """Area under ``values(areas)`` relative to ``values[0] * (areas[-1] - areas[0])`` (trapezoid rule): 1.0 when
    nothing degrades; None with one point or a clean score of 0."""
    if len(areas) < 2 or values[0] <= 0:
        return None
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy >= 2.0 renamed it
    return round(float(trapezoid(values, areas) / (values[0] * (areas[-1] - areas[0]))), 4)


def run_sweep(model: torch.nn.Module, cfg, folder: str | Path, sweep: Sweep, donors: Optional[List[Item]] = None,
              sie: str = "mean", batch_size: int = 64, device: str = "cpu", progress: bool = True,
              on_point=None) -> Dict[str, Any]:
    """The curves of ``model`` (config ``cfg``: input size, normalisation, distance) on ``folder``; ``donors``
    (default: the folder's own queries) give the scene and person pixels. ``on_point(kind, position, area, images,
    boxes)`` sees each point's occluded queries (e.g. to save them). Returns the result dict (JSON-ready)."""
    from tqdm import tqdm
    query, gallery = read_test_folder(folder)
    donors = donors or query
    features = _Features(model, cfg, sie, batch_size, device)
    q_images = [np.asarray(read_image(p)) for p, _, _ in query]
    d_images = q_images if donors is query else [np.asarray(read_image(p)) for p, _, _ in donors]
    q_pids, d_pids = np.array([q[1] for q in query]), np.array([d[1] for d in donors])
    gf = features([np.asarray(read_image(p)) for p, _, _ in gallery], [g[2] for g in gallery])
    q_cams = [q[2] for q in query]
    metric, normalize = cfg.test.dist_metric, bool(cfg.test.normalize_feature)
    clean = _score(features(q_images, q_cams), gf, query, gallery, metric, normalize)
    points = [(k, p, i, a) for k in sweep.kinds for p in sweep.positions for i, a in enumerate(sweep.areas) if a > 0]
    results = []
    for kind, position, index, area in tqdm(points, desc="robustness", unit="point", disable=not progress):
        images, boxes = occlude_queries(q_images, q_pids, d_images, d_pids, kind, position, area, index, sweep.seed)
        results.append({"kind": kind, "position": position, "area": area,
                        **_score(features(images, q_cams), gf, query, gallery, metric, normalize)})
        if on_point is not None:
            on_point(kind, position, area, query, images, boxes)
    curves = []
    for kind in sweep.kinds:
        for position in sweep.positions:
            row = [clean] + [r for r in results if r["kind"] == kind and r["position"] == position]
            curves.append({"kind": kind, "position": position, "areas": list(sweep.areas),
                           "mAP": [r["mAP"] for r in row], "R1": [r["R1"] for r in row],
                           "mAP_auc_rel": curve_summary(sweep.areas, [r["mAP"] for r in row]),
                           "R1_auc_rel": curve_summary(sweep.areas, [r["R1"] for r in row])})
    return {"folder": str(folder), "queries": len(query), "gallery": len(gallery), "seed": sweep.seed,
            "sie": features.sie_mode, "metric": metric, "clean": clean, "points": results, "curves": curves}


def load_any(weights: str, model_name: str = "", device: str = "cpu") -> Tuple[torch.nn.Module, Any]:
    """A trained checkpoint as ``(model in eval mode, config)``: a plugin model (:func:`~lfem_plugin.tools.inference.
    load_trained`) or a torchreid model (built by torchreid's factory, classifier sized from the checkpoint, loaded
    strictly). ``model_name`` names the model of a checkpoint without a stored config (torchreid's own engines).
    Raises ValueError / KeyError with what to pass."""
    from .. import _torchreid
    from ..config import load_config
    from ..registry import MODELS
    from ..utils.checkpoint import load_checkpoint, load_state_strict, trained_size
    from ..utils.state_layout import trained_state_dict
    from .inference import load_trained
    state = load_checkpoint(weights)
    if not isinstance(state, dict):  # e.g. torch.save(tensor): refused here, not as an AttributeError below
        raise ValueError(f"{weights} holds no checkpoint (a {type(state).__name__}, not a dict with a state_dict); "
                         f"pass a model.pth.tar-N file written by lfem-reid train or torchreid's engine")
    opts = ["model.name", model_name] if model_name else []
    if not state.get("config") and not model_name:
        raise ValueError(f"{weights} holds no config (written by torchreid's engine?); name its model with --model "
                         f"NAME (e.g. osnet_x0_25)")
    cfg = load_config(None, opts, text=state.get("config") or None)
    if cfg.model.name in MODELS:
        return load_trained(weights, None, opts, device=device)
    sd = trained_state_dict(state)  # torchreid's wrapper and DataParallel's module. too
    classifier = [v for k, v in sd.items() if k.endswith("classifier.weight")]
    model = _torchreid.root().models.build_model(cfg.model.name, num_classes=classifier[0].shape[0] if classifier
                                                 else 1, loss="softmax", pretrained=False, use_gpu=False)
    load_state_strict(model, sd, weights, f"torchreid model {cfg.model.name}", trained_size(state))
    return model.to(device).eval(), cfg


def write_outputs(result: Dict[str, Any], out_dir: Path) -> Dict[str, Path]:
    """``robustness.json``, ``robustness.md`` (one table per position: mAP by kind and area, and the summary) and
    ``robustness.png`` (one panel per position, one line per kind) in ``out_dir``."""
    import json

    from ..utils.atomic import write_text
    from .visualize import pyplot, save_figure
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "robustness.json", "table": out_dir / "robustness.md",
             "plot": out_dir / "robustness.png"}
    write_text(paths["json"], json.dumps(result, indent=1) + "\n", "robustness report")
    write_text(paths["table"], format_table(result), "robustness table")
    positions = list(dict.fromkeys(c["position"] for c in result["curves"]))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(positions), figsize=(4 * len(positions), 3.4), sharey=True, squeeze=False)
    for ax, position in zip(axes[0], positions):
        for c in (c for c in result["curves"] if c["position"] == position):
            ax.plot([100 * a for a in c["areas"]], c["mAP"], marker="o", label=f"{c['kind']} ({c['mAP_auc_rel']})")
        ax.set(title=f"occluder at the {position}", xlabel="occluded query area (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="kind (AUC rel.)", title_fontsize=7)
    axes[0][0].set_ylabel("mAP (%)")
    fig.tight_layout()
    save_figure(fig, paths["plot"], dpi=110)
    plt.close(fig)
    return paths


def format_table(result: Dict[str, Any]) -> str:
    """The markdown table of :func:`run_sweep`'s result: per position, one row per kind (mAP at each area, then the
    summary)."""
    areas = result["curves"][0]["areas"]
    lines = [f"Clean: R1 {result['clean']['R1']} / mAP {result['clean']['mAP']} ({result['queries']} queries, "
             f"{result['gallery']} gallery, SIE {result['sie']}, seed {result['seed']})", ""]
    for position in dict.fromkeys(c["position"] for c in result["curves"]):
        lines += [f"occluder at the {position}: mAP (%) by occluded area", "",
                  "| kind | " + " | ".join(f"{100 * a:.0f}%" for a in areas) + " | AUC rel. (mAP) | AUC rel. (R1) |",
                  "| --- |" + " --- |" * (len(areas) + 2)]
        for c in (c for c in result["curves"] if c["position"] == position):
            lines.append(f"| {c['kind']} | " + " | ".join(f"{v:.1f}" for v in c["mAP"]) +
                         f" | {c['mAP_auc_rel']} | {c['R1_auc_rel']} |")
        lines.append("")
    return "\n".join(lines)
