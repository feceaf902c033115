"""doctor's distance to the limit: the model's FLOPs per image and the fraction of the GPU's peak they reach.

Reference: issue 27 (the paper config at about 20% of an H100's dense bf16 peak); torch's FLOP counter.
"""
from __future__ import annotations

from typing import Any, Dict

import torch

from ..utils.flops import count_flops, device_peak, fraction_of_peak

__all__ = ["distance_to_peak", "format_peak"]


def distance_to_peak(engine, data, report: Dict[str, Any]) -> Dict[str, Any]:
    """FLOPs per image of a training step (forward + loss + backward) and of the evaluation forward, counted on the
    real model (:func:`lfem_plugin.utils.flops.count_flops`); achieved TFLOP/s at the measured images/s and, on a GPU of
    :data:`~lfem_plugin.utils.flops.PEAKS`, the fraction of its dense peak in each stage's precision (bf16 under
    autocast, fp32 without: TF32 matmuls can then pass the fp32 peak)."""
    batch = engine.prepare_batch(data)  # as the training step reads a batch (with what a project adds)
    images, cameras = batch.images, batch.cameras

    def train_step():
        with engine._autocast():
            loss = engine.training_step(batch).loss
        loss.backward()
    engine.set_model_mode("train")
    train_flops = count_flops(train_step) / (images.shape[0] * images.shape[1])
    engine.model.zero_grad(set_to_none=True)
    engine.set_model_mode("eval")
    with torch.no_grad():
        eval_flops = count_flops(lambda: engine.extract_features(images[0], cameras)) / images.shape[1]
    peak = device_peak(report["device"]) if engine.device.type == "cuda" else None
    out = {"train_gflops_per_image": train_flops / 1e9, "eval_gflops_per_image": eval_flops / 1e9,
           "peak_device": peak.name if peak else None}
    for stage, flops, rate, precision in (("train", train_flops, report["images_per_s"], engine.amp),
                                          ("eval", eval_flops, report["eval_images_per_s"], engine.eval_amp)):
        reached = fraction_of_peak(flops, rate, peak, precision)
        out.update({f"{stage}_tflops": reached["tflops"], f"{stage}_peak_fraction": reached["fraction"],
                    f"{stage}_peak_tflops": reached["peak_tflops"],
                    f"{stage}_precision": "fp32" if precision == "off" else precision})
    return out


def format_peak(report: Dict[str, Any]) -> str:
    """doctor's line for :func:`distance_to_peak`'s fields."""
    line = (f"arithmetic: {report['train_gflops_per_image']:.2f} GFLOPs per image per training step (forward + "
            f"backward), {report['eval_gflops_per_image']:.2f} per evaluation image; achieved "
            f"{report['train_tflops']:.2f} TFLOP/s training, {report['eval_tflops']:.2f} evaluating")
    if report["train_peak_fraction"] is None:
        return line + " (fraction of peak: device not in lfem_plugin.utils.flops.PEAKS)"
    stages = []
    for stage in ("train", "eval"):
        fraction, rate = report[f"{stage}_peak_fraction"], report[f"{stage}_peak_tflops"]
        stages.append("-" if fraction is None else f"{fraction:.1%} of {rate:g} ({report[f'{stage}_precision']})")
    return line + f" = {stages[0]} / {stages[1]} dense TFLOP/s of the {report['peak_device']}"
