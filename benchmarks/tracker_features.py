"""Which feature fits a tracker's cosine thresholds: for a trained plugin checkpoint and a Market-layout folder, the
cosine distances between a query and the gallery images of the same person (other camera) and of other people, for
each candidate reading of the model's feature, with the rank-1 / mAP each reading gives (cosine distance ranking).

Readings: the evaluation feature ``f_final`` before the BNNeck (the paper's), after it, TransReID's concatenation
before / after, and ``f_final`` centred by a mean stored from training images (``--train-split``). Trackers
L2-normalise and accept a match below a fixed cosine distance: Ultralytics BoT-SORT's ``appearance_thresh`` 0.8
is a cosine distance / 2 <= 0.2, i.e. d <= 0.4 (../shared/notes/trackers.md); the table gives, per reading, the share
of same-person pairs under 0.4 (kept) and of different-person pairs under it (confused), and the ROC AUC of the two
distributions (threshold-free separation).

Usage: python benchmarks/tracker_features.py CKPT FOLDER [--train-split bounding_box_train] [--max-train 512]
       [--out benchmarks/results/tracker_features.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

THRESHOLD = 0.4  # cosine distance under which BoT-SORT (Ultralytics, appearance_thresh 0.8) accepts a match


def _features(model, paths, cfg, cameras):
    from lfem_plugin.tools.inference import extract_features
    feats, _ = extract_features(model, paths, cfg.data.height, cfg.data.width, cfg.data.norm_mean, cfg.data.norm_std,
                                cameras)
    return torch.from_numpy(feats)


def _reading(model, neck: str, feature: str):
    out = copy.deepcopy(model)
    out.neck_feat, out.eval_feature = neck, feature  # the constructor's documented switches
    return out.eval()


def _auc(same: np.ndarray, diff: np.ndarray) -> float:
    """P(d_same < d_diff) (+ half the ties): the ROC AUC of distances, by ranks."""
    values = np.concatenate([same, diff])
    ranks = values.argsort().argsort() + 1.0
    return float((ranks[len(same):].sum() - len(diff) * (len(diff) + 1) / 2) / (len(same) * len(diff)))


def _stats(q, g, query, gallery):
    from lfem_plugin.metrics.rank import evaluate_rank
    qn, gn = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1)
    dist = (1 - qn @ gn.T).numpy()
    qp, gp = np.array([x[1] for x in query]), np.array([x[1] for x in gallery])
    qc, gc = np.array([x[2] for x in query]), np.array([x[2] for x in gallery])
    same_mask = (qp[:, None] == gp[None]) & (qc[:, None] != gc[None])
    same, diff = dist[same_mask], dist[qp[:, None] != gp[None]]
    cmc, mean_ap = evaluate_rank(dist, qp, gp, qc, gc)
    pct = lambda a: [round(float(v), 4) for v in np.percentile(a, [5, 50, 95])]  # noqa: E731
    return {"same_p5_median_p95": pct(same), "different_p5_median_p95": pct(diff),
            f"same_below_{THRESHOLD}": round(float((same <= THRESHOLD).mean()), 4),
            f"different_below_{THRESHOLD}": round(float((diff <= THRESHOLD).mean()), 4),
            "roc_auc": round(_auc(same, diff), 4), "R1": round(100 * float(cmc[0]), 2),
            "mAP": round(100 * float(mean_ap), 2), "pairs_same": int(same.size), "pairs_different": int(diff.size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("folder", type=Path, help="Market-layout folder (query/, bounding_box_test/)")
    parser.add_argument("--train-split", default="bounding_box_train", help="images for the stored mean")
    parser.add_argument("--max-train", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tracker_features.json"))
    args = parser.parse_args()
    from lfem_plugin.data.market_layout import scan_market_split
    from lfem_plugin.tools.robustness import load_any, read_test_folder
    model, cfg = load_any(str(args.checkpoint))
    query, gallery = read_test_folder(args.folder)
    train = scan_market_split(args.folder / args.train_split)
    train = train[::max(1, len(train) // args.max_train)]
    cams = lambda items: [-1] * len(items) if model.uses_sie else None  # noqa: E731  (the tracker export's reading)
    rows = {}
    for neck in ("before", "after"):
        for feature in ("final", "concat"):
            m = _reading(model, neck, feature)
            q, g = _features(m, [x[0] for x in query], cfg, cams(query)), _features(m, [x[0] for x in gallery],
                                                                                     cfg, cams(gallery))
            rows[f"{feature}/{neck}"] = _stats(q, g, query, gallery)
            if feature == "final":
                mean = _features(m, [x[0] for x in train], cfg, cams(train)).mean(0, keepdim=True)
                rows[f"{feature}/{neck}/centred"] = _stats(q - mean, g - mean, query, gallery)
    record = {"about": __doc__.split("\n\n")[0], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.machine()} CPU", "checkpoint": str(args.checkpoint), "folder": str(args.folder),
              "model": cfg.model.name, "threshold": THRESHOLD, "sie": "mean" if model.uses_sie else "off",
              "readings": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    for name, r in rows.items():
        print(f"{name:22s} same {r['same_p5_median_p95']} diff {r['different_p5_median_p95']} kept "
              f"{r[f'same_below_{THRESHOLD}']:.2f} confused {r[f'different_below_{THRESHOLD}']:.2f} AUC "
              f"{r['roc_auc']:.3f} R1 {r['R1']} mAP {r['mAP']}")


if __name__ == "__main__":
    main()
