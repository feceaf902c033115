"""Pictures of what the model sees: LFEM gates over the JPM patch groups, and CMC curves (matplotlib PNGs).

Ranked lists come from torchreid's ``visualize_ranked_results`` through the engine (``lfem-reid test --visualize``).

Reference: LFEM paper Sec. 3.3 (relation gate r per local group); TransReID Sec. 3.4 (JPM groups).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["plot_cmc", "draw_lfem_groups", "draw_gate_pictures", "pyplot"]

_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628")


def pyplot():
    """matplotlib's ``pyplot`` on the file backend (Agg: no display needed), imported only when a picture is drawn;
    every picture of the plugin goes through it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_cmc(curves: Dict[str, Sequence[float]], path: str | Path, max_rank: int = 20) -> Path:
    """One CMC curve per entry of ``curves`` (fractions in [0, 1])."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, cmc in curves.items():
        cmc = np.asarray(cmc[:max_rank]) * 100
        ax.plot(np.arange(1, len(cmc) + 1), cmc, marker="o", markersize=3, label=label)
    ax.set(xlabel="rank", ylabel="matching rate (%)", title="CMC", ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


@torch.no_grad()
def draw_lfem_groups(model: torch.nn.Module, image: torch.Tensor, shown: np.ndarray, path: str | Path,
                     camera: Optional[int] = None, title: str = "") -> np.ndarray:
    """Draw each JPM patch group over the image with its LFEM relation gate ``r_k``; returns the gates.

    Args:
        model: an :class:`~lfem_plugin.models.LFEMViT` with LFEM (eval mode).
        image: the normalised input ``(3, H, W)``.
        shown: the same image as ``(H, W, 3)`` uint8 for display.
        path: output PNG.
        camera: camera id for SIE (None: no SIE).
    """
    model.eval()
    cam = None if camera is None else torch.tensor([camera])
    gates = model.gates(image.unsqueeze(0), camera=cam)
    if gates is None:
        raise ValueError("the model has no LFEM (use_lfem=False): there are no gates to draw")
    gates = gates[0].float().numpy()
    plt = pyplot()
    groups = model.group_windows()
    fig, axes = plt.subplots(1, len(groups) + 1, figsize=(1.6 * (len(groups) + 1), 3.4))
    axes[0].imshow(shown)
    axes[0].set_title(title or "input", fontsize=8)
    for k, (ax, group) in enumerate(zip(axes[1:], groups)):
        mask = np.zeros(shown.shape[:2], dtype=np.float32)
        for top, left, height, width in group:
            mask[top:top + height, left:left + width] = 1.0
        colour = np.array(_hex_rgb(_COLOURS[k % len(_COLOURS)]), dtype=np.float32)
        blend = shown.astype(np.float32) * (1 - 0.55 * mask[..., None]) + colour * 0.55 * mask[..., None]
        ax.imshow(blend.astype(np.uint8))
        ax.set_title(f"group {k + 1}\nr = {gates[k]:.3f}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return gates


def draw_gate_pictures(model: torch.nn.Module, images: Sequence[Tuple[str, Optional[int], str]],
                       transform: Callable, size: Tuple[int, int], out_dir: Path) -> List[Tuple[Path, np.ndarray]]:
    """:func:`draw_lfem_groups` for each ``(path, camera, title)``, written as ``<index>_<stem>_lfem.png`` under
    ``out_dir`` (the index keeps images with equal stems apart); returns each picture's path and gates."""
    from ..data.io import read_image
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = []
    for index, (path, camera, title) in enumerate(images):
        img = read_image(path)
        shown = np.asarray(img.resize((size[1], size[0])))
        out = out_dir / f"{index:03d}_{Path(path).stem}_lfem.png"
        drawn.append((out, draw_lfem_groups(model, transform(img), shown, out, camera, title)))
    return drawn


def _hex_rgb(value: str):
    return tuple(int(value[i:i + 2], 16) for i in (1, 3, 5))
