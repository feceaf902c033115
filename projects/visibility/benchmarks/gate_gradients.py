"""Which losses train the LFEM gate? Gradient norms on the gate's parameters, loss by loss, of a trained run.

For the last checkpoint of each run folder (``lfem-reid compare`` runs or ``lfem-reid train`` save dirs), a few
training batches of its own config go through the engine's step; for the identity losses (all CE + triplet terms
together), the gate BCE and the per-token BCE separately, the gradient norm on each LFEM's relation projection
``W_l1`` and, with ``gate_input relation_tokens(_mlp)``, its token score ``w`` (and the MLP's hidden ``W_t``),
averaged over the batches. Writes JSON.

Usage: python benchmarks/gate_gradients.py RUN [RUN ...] [--batches 4] [--out gate_gradients.json]
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
from _trained_run import main_over_runs, rebuild_run


def _norms(run: Path, batches: int) -> Dict[str, Dict[str, float]]:
    import torch
    _, dm, engine, model = rebuild_run(run, "gate_gradients")
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


def _show(name: str, norms: Dict[str, Dict[str, float]]) -> None:
    for loss, per in norms.items():
        print(f"{name:28s} {loss:10s} " + "  ".join(f"{k} {v:.4f}" for k, v in per.items()))


def main() -> None:
    main_over_runs(__doc__.split("\n\n")[0], "gate_gradients.json", _norms, _show)


if __name__ == "__main__":
    main()
