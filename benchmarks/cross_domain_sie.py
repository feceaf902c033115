"""What SIE should do with a test set whose cameras have nothing to do with the training cameras (a proxy).

Trains the quick profile's tiny LFEM model (configs/orl/quick_vit_tiny_96x80.yaml, 100 epochs, CPU) on the clean
ORL faces (``orl_faces``) and evaluates the occluded-query set (``orl_faces_occluded``, not a training source) with
each ``test.cross_domain_sie`` reading, plus one that only a benchmark can show:

* ``cameras``: the target's own ids (query 0, gallery 1). On this proxy they *do* mean what they meant in training
  (ORL's query/gallery images follow the training split's camera convention), so this is the in-domain reference.
* ``cameras_swapped``: query 1, gallery 0 - equally valid for a set whose ids are arbitrary (Occluded-REID,
  Partial-REID, Partial-iLIDS give query 0 / gallery 1 by convention only).
* ``mean``: the mean SIE row for every image (the default).
* ``off``: no SIE term.

Usage: python benchmarks/cross_domain_sie.py [--seeds 0 1 2] [--epochs 100] [--root DIR] [--out JSON]
Writes benchmarks/results/cross_domain_sie.json (R1 and mAP per reading and seed, mean and std).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
READINGS = ("cameras", "cameras_swapped", "mean", "off")


def _scores(engine, name: str) -> Dict[str, Dict[str, float]]:
    from lfem_plugin.engine.evaluation import query_gallery_distances
    from lfem_plugin.metrics import evaluate_rank
    loaders = engine.test_loader[name]
    out = {}
    for reading in READINGS:  # 'cameras' first: it also gives the pids and the protocol's cameras
        if reading == "cameras_swapped":
            qf, gf = _with_cameras(engine, loaders["query"], 1), _with_cameras(engine, loaders["gallery"], 0)
        else:
            qf, q_pids, q_cams = engine._extract(loaders["query"], reading)
            gf, g_pids, g_cams = engine._extract(loaders["gallery"], reading)
        cmc, mAP = evaluate_rank(query_gallery_distances(qf, gf), q_pids, g_pids, q_cams, g_cams)
        out[reading] = {"R1": 100 * float(cmc[0]), "mAP": 100 * float(mAP)}
    return out


@torch.no_grad()
def _with_cameras(engine, loader, camera: int) -> torch.Tensor:
    feats = []
    for data in loader:
        images = data["img"].to(engine.device)
        feats.append(engine.extract_features(images, torch.full((len(images),), camera)).cpu())
    return torch.cat(feats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--root", default="")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cross_domain_sie.json")
    args = parser.parse_args()
    from lfem_plugin import config as C
    from lfem_plugin.tools import train as T
    runs: List[Dict] = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = C.load_config(REPO / "configs" / "orl" / "quick_vit_tiny_96x80.yaml", [
                "data.sources", "['orl_faces']", "data.targets", "['orl_faces_occluded']", "train.seed", str(seed),
                "train.max_epoch", str(args.epochs), "data.save_dir", tmp, "use_gpu", "False",
                "data.root", args.root or tmp])
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                engine = T.run(cfg)
            scores = _scores(engine, "orl_faces_occluded")
            runs.append({"seed": seed, "train_s": time.perf_counter() - start, **scores})
            print(f"seed {seed}: " + "  ".join(f"{k} R1 {v['R1']:.1f} mAP {v['mAP']:.1f}" for k, v in scores.items()),
                  flush=True)
    summary = {r: {m: [float(np.mean([run[r][m] for run in runs])), float(np.std([run[r][m] for run in runs],
                                                                                  ddof=1)) if len(runs) > 1 else 0.0]
                   for m in ("R1", "mAP")} for r in READINGS}
    print(f"\n{'reading':<16} {'R1':>12} {'mAP':>12}   ({len(runs)} seeds, mean ± std)")
    for reading, row in summary.items():
        print(f"{reading:<16} {row['R1'][0]:6.1f} ± {row['R1'][1]:3.1f} {row['mAP'][0]:6.1f} ± {row['mAP'][1]:3.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "device": "cpu",
                                    "torch": torch.__version__, "epochs": args.epochs,
                                    "protocol": "train orl_faces, evaluate orl_faces_occluded (not a source)",
                                    "summary": summary, "runs": runs}, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
