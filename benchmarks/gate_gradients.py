"""Which losses train the LFEM gate? Gradient norms on the gate's parameters, loss by loss, of a trained run.

For the last checkpoint of each run folder (``lfem-reid compare`` runs or ``lfem-reid train`` save dirs), a few
training batches of its own config go through the engine's step; for the identity losses (all CE + triplet terms
together), the gate BCE and the per-token BCE separately, the gradient norm on each LFEM's relation projection
``W_l1`` and, with ``gate_input relation_tokens(_mlp)``, its token score ``w`` (and the MLP's hidden ``W_t``),
averaged over the batches. Writes JSON.

Usage: python benchmarks/gate_gradients.py RUN [RUN ...] [--batches 4] [--out gate_gradients.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Dict, List

import numpy as np


def _norms(run: Path, batches: int) -> Dict[str, Dict[str, float]]:
    import torch

    from lfem_plugin.tools import train as T
    from lfem_plugin.tools.inference import load_trained
    from lfem_plugin.utils.checkpoint import latest_checkpoint, load_checkpoint
    ckpt = str(latest_checkpoint(run / "model"))
    _, cfg = load_trained(ckpt)
    cfg.defrost()
    cfg.data.workers, cfg.data.save_dir = 0, str(Path("/tmp") / f"gate_gradients_{run.name}")
    cfg.freeze()
    torch.manual_seed(0)
    dm = T.build_datamanager(cfg)
    engine, model = T.build_engine(cfg, dm)
    model.load_state_dict(load_checkpoint(ckpt)["state_dict"])
    model.train()
    params = {f"W_l1/{k + 1}": lfem.proj_local_key.weight for k, lfem in enumerate(model.fusion.lfems)}
    params.update({f"w/{k + 1}": lfem.token_score.weight for k, lfem in enumerate(model.fusion.lfems)
                   if lfem.token_score is not None})
    params.update({f"W_t/{k + 1}": lfem.token_hidden[0].weight for k, lfem in enumerate(model.fusion.lfems)
                   if isinstance(lfem.token_hidden, torch.nn.Sequential)})  # gate_input relation_tokens_mlp
    sums: Dict[str, Dict[str, List[float]]] = {}
    for _, data in zip(range(batches), dm.train_loader):
        pids, cams = data["pid"].to(engine.device), data["camid"].to(engine.device)
        images, visibility, tokens = engine._views(data, pids)
        out = model(images, camera=cams, branch_features=True)
        identity, _ = engine.criterion(model.classify(out.names, out.features), out.features, pids, out.names)
        losses = {"identity": identity}
        if engine.gate_loss is not None:
            losses["gate_bce"] = engine.gate_loss(out.gate_logits, visibility)
        if engine.token_loss is not None:
            losses["token_bce"] = engine.token_loss(out.token_logits, tokens)
        for name, loss in losses.items():
            grads = torch.autograd.grad(loss, list(params.values()), retain_graph=True, allow_unused=True)
            for key, grad in zip(params, grads):
                sums.setdefault(name, {}).setdefault(key, []).append(0.0 if grad is None else float(grad.norm()))
    return {name: {key: float(np.mean(v)) for key, v in per.items()} for name, per in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("gate_gradients.json"))
    args = parser.parse_args()
    import torch
    torch.set_num_threads(2)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} cpu", "batches": args.batches,
              "runs": {}}
    for run in args.runs:
        norms = _norms(run, args.batches)
        result["runs"][run.name] = norms
        for name, per in norms.items():
            print(f"{run.name:28s} {name:10s} " + "  ".join(f"{k} {v:.4f}" for k, v in per.items()))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
