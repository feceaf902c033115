"""Backbone gradient norm of one batch under the literal-sum loss ("paper") vs TransReID's normalisation.

Usage: python benchmarks/bench_loss_weights.py [--model lfem_vit] [--ids 4] [--instances 3] [--seeds 3] [--out DIR]

The full-size model (ViT-B/16, stride 11, 256x128, three views, seven branches) at random init on random images
(no ImageNet weights offline); one forward per seed, both losses differentiated from the same graph. Prints the
ratio paper / transreid of the total loss and of the backbone gradient norm, and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import lfem_plugin  # noqa: F401  (registers the models)
from lfem_plugin.losses import MultiBranchLoss, branch_weights
from lfem_plugin.registry import MODELS


def measure(model, seed: int, ids: int, instances: int) -> dict:
    torch.manual_seed(seed)
    batch = ids * instances
    views = torch.randn(3, batch, 3, 256, 128)
    pids = torch.arange(ids).repeat_interleave(instances)
    out = model(views, camera=torch.randint(0, 8, (batch,)), branch_features=True)
    logits = model.classify(out.names, out.features)
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    result = {}
    for preset in ("paper", "transreid"):
        weights = branch_weights(out.names, preset)
        loss, _ = MultiBranchLoss(out.names, weights, weights)(logits, out.features, pids)
        grads = torch.autograd.grad(loss, backbone, retain_graph=True)
        result[preset] = {"loss": loss.item(), "backbone_grad_norm": torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()}
    result["loss_ratio"] = result["paper"]["loss"] / result["transreid"]["loss"]
    result["grad_ratio"] = result["paper"]["backbone_grad_norm"] / result["transreid"]["backbone_grad_norm"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="lfem_vit")
    parser.add_argument("--ids", type=int, default=4)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    model = MODELS.get(args.model)(num_classes=702, loss="triplet", pretrained=False).train()
    runs = [measure(model, seed, args.ids, args.instances) for seed in range(args.seeds)]
    for seed, run in enumerate(runs):
        print(f"seed {seed}: loss paper/transreid {run['loss_ratio']:.2f}x, backbone gradient norm "
              f"{run['grad_ratio']:.2f}x")
    record = {"model": args.model, "batch": f"{args.ids}x{args.instances} x 3 views", "init": "random",
              "runs": runs, "mean_grad_ratio": sum(r["grad_ratio"] for r in runs) / len(runs),
              "mean_loss_ratio": sum(r["loss_ratio"] for r in runs) / len(runs), "torch": torch.__version__,
              "machine": platform.machine(), "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_loss_weights_{args.model}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"mean: loss {record['mean_loss_ratio']:.2f}x, backbone gradient norm {record['mean_grad_ratio']:.2f}x "
          f"-> {path}")


if __name__ == "__main__":
    main()
