"""What an occlusion-robustness sweep (:func:`lfem_plugin.tools.robustness.sweep`) gives a reader: one summary number
per curve, a markdown table and a plot (one panel per position, one line per kind).

The summary of a curve is its relative area: the area under score(occluded area) from 0 to the largest area swept
(trapezoids; the clean score at 0), divided by the clean score times that largest area. 1.0 means no degradation,
0.5 e.g. a straight fall from the clean score to zero at the largest area.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from .visualize import _plt

__all__ = ["relative_auc", "summarise", "markdown_table", "plot_curves", "write_json"]

METRICS = ("mAP", "rank1")


def relative_auc(areas: Sequence[float], scores: Sequence[float], clean: float) -> float:
    """Area under ``scores`` over ``areas`` (sorted; the point (0, ``clean``) added when 0 is missing) relative to
    ``clean * max(areas)``; NaN for a clean score of 0 or no area above 0."""
    x, y = list(areas), list(scores)
    if not x or x[0] != 0:
        x, y = [0.0, *x], [clean, *y]
    if clean <= 0 or x[-1] <= 0:
        return float("nan")
    y, x = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (clean * x[-1]))


def _curve(result: Dict[str, Any], kind: str, position: str) -> List[Dict[str, Any]]:
    return sorted((p for p in result["points"] if p["kind"] == kind and p["position"] == position),
                  key=lambda p: p["area"])


def summarise(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One entry per (kind, position) curve: ``auc_mAP`` and ``auc_rank1`` (:func:`relative_auc`)."""
    rows = []
    for kind in result["kinds"]:
        for position in result["positions"]:
            curve = _curve(result, kind, position)
            rows.append({"kind": kind, "position": position, **{
                f"auc_{m}": relative_auc([p["area"] for p in curve], [p[m] for p in curve], result["clean"][m])
                for m in METRICS}})
    return rows


def markdown_table(result: Dict[str, Any]) -> str:
    """Rows: kind/position; columns: R1 / mAP (%) at each area, then the two relative areas."""
    areas = result["areas"]
    head = "| kind | position | " + " | ".join(f"{a:.0%} R1 / mAP" for a in areas) + " | AUC R1 | AUC mAP |"
    lines = [head, "| --- | --- |" + " --- |" * (len(areas) + 2)]
    for row in result["summary"]:
        curve = {p["area"]: p for p in _curve(result, row["kind"], row["position"])}
        cells = [f"{100 * curve[a]['rank1']:.1f} / {100 * curve[a]['mAP']:.1f}" for a in areas]
        lines.append(f"| {row['kind']} | {row['position']} | " + " | ".join(cells) +
                     f" | {row['auc_rank1']:.3f} | {row['auc_mAP']:.3f} |")
    clean = result["clean"]
    lines.append(f"\nclean: R1 {100 * clean['rank1']:.1f} / mAP {100 * clean['mAP']:.1f} "
                 f"({result['queries']} queries, {result['gallery']} gallery images)")
    return "\n".join(lines)


def plot_curves(result: Dict[str, Any], path: Path, title: str = "") -> Path:
    """``path`` (PNG): rows mAP and R1, one panel per position, one line per kind, x = occluded area (%)."""
    plt = _plt()
    positions = result["positions"]
    fig, axes = plt.subplots(len(METRICS), len(positions), figsize=(3.2 * len(positions), 5.4), squeeze=False,
                             sharey="row")
    for r, metric in enumerate(METRICS):
        for c, position in enumerate(positions):
            ax = axes[r][c]
            for kind in result["kinds"]:
                curve = _curve(result, kind, position)
                ax.plot([100 * p["area"] for p in curve], [100 * p[metric] for p in curve], marker="o", ms=3,
                        label=kind)
            ax.axhline(100 * result["clean"][metric], color="grey", lw=0.6, ls="--")
            ax.set(title=f"{position}" if r == 0 else "", xlabel="occluded area of the query (%)" if r else "",
                   ylabel=f"{'R1' if metric == 'rank1' else metric} (%)" if c == 0 else "")
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_json(result: Dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path
