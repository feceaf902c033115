"""Do a trained model's tokens know which patches an occluder hides? Probes on training views, occluder by occluder.

The LFEM gate can only fall on an occluded group if the tokens it reads carry the occlusion. For the last checkpoint
of each run folder (``lfem-reid compare`` runs or ``lfem-reid train`` save dirs), a few training batches of its own
config (its transforms, PK sampler and erased rectangles) are filled three ways - timm's noise (the paper), the same
rectangle of another identity's image (``lfem.occluder paste``) and a piece cut anywhere in it and resized in
(``paste_resized``) - and, over the views that hide something, each patch's visible fraction is compared with:

* ``token_score``: the gate's own per-token score (``lfem.gate_input relation_tokens``; Spearman), and the mean
  score of hidden (< 10% visible) and visible (> 99%) patches;
* ``gate``: the LFEM gates of the occluded groups (Spearman with the group's visible fraction);
* ``ridge`` / ``mlp``: what a linear / one-hidden-layer (128) probe (one fit each) fitted on half of the images'
  frozen tokens does on the other half (Pearson r): the JPM local branch's output tokens (what the gate reads) and
  the trunk's tokens before the JPM block. A low probe r means the features do not hold the occlusion, whatever the
  gate does.

Usage: python benchmarks/visibility_probe.py RUN [RUN ...] [--batches 4] [--out visibility_probe.json]
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from _trained_run import main_over_runs, rebuild_run

OCCLUDERS = ("noise", "paste", "paste_resized")


def _probe(features: np.ndarray, target: np.ndarray, image: np.ndarray, hidden_layer: bool) -> float:
    """Pearson r on held-out images (odd image id: every view of an image on one side) of a probe fitted on the
    even ones, after standardising; one fit (ridge lambda 1e-2; MLP: Adam 1e-3, 1500 steps of 512)."""
    import torch
    fit, held = image % 2 == 0, image % 2 == 1
    x = torch.tensor(features, dtype=torch.float32)
    x = (x - x[fit].mean(0)) / (x[fit].std(0) + 1e-6)
    y = torch.tensor(target, dtype=torch.float32)
    if hidden_layer:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.ReLU(), torch.nn.Linear(128, 1))
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        rows = torch.nonzero(torch.tensor(fit)).flatten()
        for _ in range(1500):
            idx = rows[torch.randint(0, len(rows), (512,))]
            loss = torch.nn.functional.mse_loss(net(x[idx]).squeeze(-1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = net(x[torch.tensor(held)]).squeeze(-1).numpy()
    else:
        a = np.c_[x[fit].numpy(), np.ones(fit.sum())]
        w = np.linalg.solve(a.T @ a + 1e-2 * np.eye(a.shape[1]), a.T @ target[fit])
        pred = np.c_[x[torch.tensor(held)].numpy(), np.ones(held.sum())] @ w
    return float(np.corrcoef(pred, target[held])[0, 1])


def _collect(model, batches: List[Dict[str, Any]], occluder: str) -> Dict[str, np.ndarray]:
    """Tokens, scores, gates and targets of the views that hide something, over the same training ``batches``
    for every occluder (the pasting draws under one seed)."""
    import torch

    from lfem_plugin.data.occluders import paste_occluders, split_views
    from lfem_plugin.models.visibility import box_mask, patch_visibility
    geometry, parts = model.token_geometry(), {}
    torch.manual_seed(0)
    for step, data in enumerate(batches):
        views, _, boxes = split_views(data["img"])
        images = torch.stack(views)
        if occluder != "noise":
            images = paste_occluders(images, boxes, data["pid"], resize=occluder == "paste_resized")
        keep = (boxes[..., 2] * boxes[..., 3] > 0).transpose(0, 1)  # (V, B): views that hide something
        images, boxes_kept = images[keep], boxes.transpose(0, 1)[keep]
        cams = data["camid"].unsqueeze(0).expand(keep.shape)[keep]
        image_ids = torch.arange(keep.shape[1]).unsqueeze(0).expand(keep.shape)[keep] + 1000 * step
        with torch.no_grad():
            trunk = model.backbone.forward_tokens(images, cams)[:, 1:]
            out = model.backbone(images, cams)
            gates = model.gates(images, camera=cams)
        lfems = model.fusion.lfems
        new = {"local": torch.stack(out.local_tokens, 1).flatten(0, 2), "trunk": trunk.flatten(0, 1),
               "target": geometry.tokens_from_boxes(boxes_kept).flatten(),
               "trunk_target": patch_visibility(box_mask(boxes_kept, *geometry.img_size), geometry.patch_size,
                                                geometry.stride).flatten(),
               "gate": gates.flatten(), "group_target": geometry.from_boxes(boxes_kept).flatten(),
               "image": image_ids}
        if lfems[0].token_score is not None:
            new["score"] = torch.stack([lf.token_score(lf.token_hidden(t)).squeeze(-1)
                                        for lf, t in zip(lfems, out.local_tokens)], 1).flatten()
        for key, value in new.items():
            parts.setdefault(key, []).append(value.detach().float().numpy())
    return {key: np.concatenate(value) for key, value in parts.items()}


def _readings(got: Dict[str, np.ndarray]) -> Dict[str, Any]:
    from scipy.stats import spearmanr
    target, n_local = got["target"], len(got["target"]) // len(got["image"])
    local_image = np.repeat(got["image"], n_local)
    trunk_image = np.repeat(got["image"], len(got["trunk_target"]) // len(got["image"]))
    occluded = got["group_target"] < 0.999
    out: Dict[str, Any] = {
        "views": int(len(got["image"])),
        "gate_spearman_occluded_groups": float(spearmanr(got["gate"][occluded], got["group_target"][occluded])[0]),
        "ridge_local": _probe(got["local"], target, local_image, False),
        "mlp_local": _probe(got["local"], target, local_image, True),
        "ridge_trunk": _probe(got["trunk"], got["trunk_target"], trunk_image, False),
        "mlp_trunk": _probe(got["trunk"], got["trunk_target"], trunk_image, True)}
    if "score" in got:
        score = got["score"]
        out.update(token_score_spearman=float(spearmanr(score, target)[0]),
                   token_score_hidden=float(score[target < 0.1].mean()),
                   token_score_visible=float(score[target > 0.99].mean()))
    return out


def _report_boxes(cfg) -> None:
    """A paper-reading run (no visibility key on) gets a loader that reports its erased rectangles."""
    if cfg.lfem.gate_supervision <= 0 and cfg.lfem.token_supervision <= 0 and cfg.lfem.occluder == "noise":
        cfg.lfem.occluder = "paste"


def _run(run: Path, batches: int) -> Dict[str, Any]:
    import torch
    cfg, dm, _, model = rebuild_run(run, "visibility_probe", _report_boxes)
    model.eval()
    torch.manual_seed(0)
    data = [batch for _, batch in zip(range(batches), dm.train_loader)]  # the same views for every occluder
    return {"trained_occluder": cfg.lfem.occluder, "model": cfg.model.name, "gate_input": cfg.lfem.gate_input,
            **{occ: _readings(_collect(model, data, occ)) for occ in OCCLUDERS}}


def _show(name: str, readings: Dict[str, Any]) -> None:
    for occ in OCCLUDERS:
        r = readings[occ]
        print(f"{name:26s} {occ:14s} " + "  ".join(f"{k} {v:+.3f}" for k, v in r.items() if k != "views"))


def main() -> None:
    main_over_runs(__doc__.split("\n\n")[0], "visibility_probe.json", _run, _show)


if __name__ == "__main__":
    main()
