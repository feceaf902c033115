"""Does the LFEM gate respond to occlusion? Gates against the known occluders of a dataset's occluded queries.

For every occluded query the occluder's rectangle is read from the dataset's occluder boxes file
(:mod:`lfem_plugin.data.occlusion`: ``orl_faces_occluded`` writes one, ``market_layout_occluded`` folders may ship
one beside ``query_occluded/``); each JPM group's
occluded fraction is the mean, over the group's patches, of the share of the patch the occluder covers (at the
model's input size). The gate ``r_k`` of the same group comes from the model's evaluation forward. The paper's
claim ("adaptively strengthens visible local features") predicts lower gates for more occluded groups, i.e. a
negative rank correlation. The clean gallery images (no occluder) give the reference gates.

Reference: LFEM paper Sec. 3.3 (relation gate ``r_k``); TransReID Sec. 3.4 (JPM groups).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr

from ..config import market_layout_kwargs, sie_mode
from ..data.io import read_image
from ..data.market_layout import market_layout_options
from ..data.occlusion import OccluderBox, find_occlusion_file, read_occlusion_file
from ..data.transforms import build_test_transform
from ..models.sie import camera_argument
from ..registry import DATASETS
from ..utils.atomic import write_text
from .visualize import pyplot, save_figure

__all__ = ["group_occlusion", "gate_statistics", "analyze_gates", "plot_gates"]

Box = Tuple[int, int, int, int]


def group_occlusion(box: Box, image_size: Tuple[int, int], model: torch.nn.Module) -> np.ndarray:
    """Occluded fraction of each JPM group of ``model`` for an occluder ``box`` (top, left, h, w) given in the
    pixels of an image of ``image_size`` (height, width), which the model sees resized to its input size."""
    in_h, in_w = model.img_size
    top, left, h, w = box
    sy, sx = in_h / image_size[0], in_w / image_size[1]
    mask = np.zeros((in_h, in_w), dtype=np.float64)
    y0, y1, x0, x1 = top * sy, (top + h) * sy, left * sx, (left + w) * sx
    ys, xs = np.arange(in_h) + 0.5, np.arange(in_w) + 0.5  # pixel centres
    mask[np.ix_((ys >= y0) & (ys < y1), (xs >= x0) & (xs < x1))] = 1.0
    # the patch pooling and JPM token order the gates see (models/visibility.py)
    visible = torch.from_numpy(1.0 - mask).unsqueeze(0)
    return 1.0 - model.token_geometry().from_mask(visible)[0].numpy()


def gate_statistics(fractions: np.ndarray, gates: np.ndarray) -> Dict[str, Any]:
    """Over all (image, group) pairs: Spearman's rank correlation of occluded fraction and gate, and the mean gate
    of groups at least half occluded vs at most 10% occluded (``fractions``, ``gates``: ``(N, K)``)."""
    f, g = np.asarray(fractions, dtype=float).ravel(), np.asarray(gates, dtype=float).ravel()
    heavy, light = f >= 0.5, f <= 0.1
    rho = float(spearmanr(f, g).statistic) if np.ptp(f) > 0 and np.ptp(g) > 0 else float("nan")
    return {"spearman": rho, "pairs": int(f.size),
            "gate_mean_occluded_ge_50": float(g[heavy].mean()) if heavy.any() else float("nan"),
            "gate_mean_occluded_le_10": float(g[light].mean()) if light.any() else float("nan"),
            "pairs_occluded_ge_50": int(heavy.sum()), "pairs_occluded_le_10": int(light.sum())}


@torch.no_grad()
def _gates(model: torch.nn.Module, paths: Sequence[str], cameras: Optional[Sequence[int]], cfg) -> np.ndarray:
    transform = build_test_transform(cfg.data.height, cfg.data.width, cfg.data.norm_mean, cfg.data.norm_std)
    images = torch.stack([transform(read_image(p)) for p in paths])
    camera = None if cameras is None else torch.as_tensor(cameras)
    gates = model.eval().gates(images, camera=camera)
    if gates is None:
        raise ValueError("the model has no LFEM (use_lfem False): there are no gates to analyse")
    return gates.float().numpy()


def _query_boxes(query: Sequence[tuple], boxes_file: str | Path) -> List[OccluderBox]:
    """Each query's box from ``boxes_file`` (by file name), checked against the image's stored size."""
    boxes = read_occlusion_file(boxes_file)
    missing = [Path(item[0]).name for item in query if Path(item[0]).name not in boxes]
    if missing:
        raise ValueError(f"{boxes_file} has no box for {len(missing)} of {len(query)} queries (e.g. {missing[0]}); "
                         f"every analysed query needs one: pass the boxes file of this query set (--boxes)")
    out = []
    for item in query:
        box = boxes[Path(item[0]).name]
        with Image.open(item[0]) as img:
            if tuple(img.size) != tuple(box.image_size_wh):
                raise ValueError(f"{boxes_file}: the box of {Path(item[0]).name} is for a {box.image_size_wh} "
                                 f"(w, h) image but {item[0]} is {list(img.size)}; use the boxes file written with "
                                 f"these images")
        out.append(box)
    return out


def analyze_gates(model: torch.nn.Module, cfg, root: str = "", dataset: str = "orl_faces_occluded",
                  boxes_file: Optional[str | Path] = None) -> Dict[str, Any]:
    """Gates and occluded fractions of every query of ``dataset`` (a registered dataset name) whose occluder box is
    in ``boxes_file`` (default: the :data:`~lfem_plugin.data.occlusion.OCCLUSION_FILE` beside its queries), and the
    gates of its gallery. ``fractions``/``query_gates``: ``(queries, groups)``; ``by_kind``: the query statistics
    per occluder ``kind`` the file names (empty when it names none), ``kinds`` each query's; errors name the file at
    fault."""
    with market_layout_options(**market_layout_kwargs(cfg)):
        data = DATASETS.get(dataset)(root=root, mode="query", verbose=False)
    query, gallery = data.query, data.gallery
    boxes = _query_boxes(query, boxes_file or find_occlusion_file([item[0] for item in query]))
    mode = sie_mode(cfg, dataset) if model.uses_sie else "off"  # as the evaluation does
    seen = set(model.build_args().camera_ids or [])
    if mode == "cameras" and not {int(item[2]) for item in query + gallery} <= seen:  # other data under a source name
        mode = cfg.test.cross_domain_sie  # (e.g. --set data.market_layout.folder B): cameras without an SIE row
    q_gates = _gates(model, [item[0] for item in query], camera_argument([q[2] for q in query], mode), cfg)
    g_gates = _gates(model, [item[0] for item in gallery], camera_argument([g[2] for g in gallery], mode), cfg)
    fractions = np.stack([group_occlusion(b.top_left_height_width(), b.image_height_width(), model) for b in boxes])
    per_group = [gate_statistics(fractions[:, k], q_gates[:, k]) for k in range(fractions.shape[1])]
    kinds = np.array([b.kind for b in boxes])
    by_kind = {kind: gate_statistics(fractions[kinds == kind], q_gates[kinds == kind])
               for kind in sorted(set(kinds.tolist()) - {""})}
    return {"dataset": dataset, "queries": gate_statistics(fractions, q_gates), "per_group": per_group,
            "by_kind": by_kind, "kinds": kinds.tolist(),
            "gallery_gate_mean": g_gates.mean(0).tolist(), "query_gate_mean": q_gates.mean(0).tolist(),
            "fractions": fractions.tolist(), "query_gates": q_gates.tolist()}


def plot_gates(result: Dict[str, Any], out_dir: Path, title: str = "") -> List[Path]:
    """``gates_scatter.png`` (occluded fraction vs gate, one colour per group) and ``gates_bars.png`` (mean gate
    per group: clean gallery, occluded queries)."""
    plt = pyplot()
    fractions, gates = np.array(result["fractions"]), np.array(result["query_gates"])
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for k in range(fractions.shape[1]):
        ax.scatter(fractions[:, k], gates[:, k], s=14, alpha=0.7, label=f"group {k + 1}")
    ax.set(xlabel="occluded fraction of the group", ylabel="gate r_k",
           title=title or f"Spearman {result['queries']['spearman']:.2f}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    scatter = out_dir / "gates_scatter.png"
    save_figure(fig, scatter)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    x = np.arange(fractions.shape[1])
    ax.bar(x - 0.2, result["gallery_gate_mean"], 0.4, label="clean gallery")
    ax.bar(x + 0.2, result["query_gate_mean"], 0.4, label="occluded queries")
    ax.set_xticks(x, [f"group {k + 1}" for k in x])
    ax.set(ylabel="mean gate r_k", ylim=(0, 1), title=title or "LFEM gates")
    ax.legend(fontsize=7)
    fig.tight_layout()
    bars = out_dir / "gates_bars.png"
    save_figure(fig, bars)
    plt.close(fig)
    return [scatter, bars]


def write(result: Dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "gates.json"
    write_text(path, json.dumps(result, indent=1) + "\n", "gate report")
    return path
