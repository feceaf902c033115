"""The model's arithmetic per image and the device's peak: how far a run is from the limit.

FLOPs are counted by torch's own counter (:class:`torch.utils.flop_counter.FlopCounterMode`: matrix products,
convolutions, attention; one multiply-add = 2 FLOPs) on the real model, for one training step (forward + backward)
and one evaluation forward. Peaks are the vendors' dense (no structured sparsity) tensor-core bf16 and plain fp32
numbers.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, NamedTuple, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

__all__ = ["DevicePeak", "PEAKS", "count_flops", "device_peak", "fraction_of_peak"]



def _attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _attention_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_aten = torch.ops.aten
# torch's counter knows the CUDA attention kernels; the CPU flash kernel gets the same formulas, so a count on the CPU
# equals the count on the GPU.
_CPU_ATTENTION = {_aten._scaled_dot_product_flash_attention_for_cpu: _attention,
                  _aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward}


class DevicePeak(NamedTuple):
    """A GPU's dense peak in TFLOP/s: bf16 on tensor cores (None: no bf16 tensor cores) and fp32 without them."""

    name: str
    bf16: Optional[float]
    fp32: float


# First match of the pattern in torch.cuda.get_device_name() wins. Sources, dense numbers (half the "with sparsity"
# ones): NVIDIA H100 Tensor Core GPU datasheet (SXM 989 / 67, PCIe 756 / 51, NVL 835 / 60); NVIDIA H200 datasheet
# (SXM: 989 / 67, the H100 SXM's compute); NVIDIA A100 datasheet (312 / 19.5, SXM and PCIe); NVIDIA L4 datasheet
# (121 / 30.3); NVIDIA L40S datasheet (362 / 91.6); NVIDIA A10 datasheet (125 / 31.2); NVIDIA Ada GPU architecture
# whitepaper, RTX 4090 (165.2 bf16 with fp32 accumulate / 82.6); NVIDIA V100 datasheet (no bf16; fp32 15.7 SXM2,
# 14 PCIe).
PEAKS = (
    (r"H100.*PCIe", DevicePeak("H100 PCIe", 756.0, 51.0)),
    (r"H100 NVL", DevicePeak("H100 NVL", 835.0, 60.0)),
    (r"H100", DevicePeak("H100 SXM", 989.0, 67.0)),
    (r"H200", DevicePeak("H200", 989.0, 67.0)),
    (r"A100", DevicePeak("A100", 312.0, 19.5)),
    (r"L40S", DevicePeak("L40S", 362.0, 91.6)),
    (r"\bL4\b", DevicePeak("L4", 121.0, 30.3)),
    (r"\bA10\b", DevicePeak("A10", 125.0, 31.2)),
    (r"RTX 4090", DevicePeak("RTX 4090", 165.2, 82.6)),
    (r"V100.*PCIE", DevicePeak("V100 PCIe", None, 14.0)),
    (r"V100", DevicePeak("V100 SXM2", None, 15.7)),
)


def device_peak(device_name: str) -> Optional[DevicePeak]:
    """The peak of the GPU named ``device_name`` (``torch.cuda.get_device_name()``); None when unknown (the CPU)."""
    for pattern, peak in PEAKS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peak
    return None


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of everything ``fn()`` runs (forward and, if ``fn`` calls it, backward), on any device, eagerly
    (``torch.compile`` is bypassed: the counter sees the real operators)."""
    with torch.compiler.set_stance("force_eager"), FlopCounterMode(display=False,
                                                                   custom_mapping=_CPU_ATTENTION) as counter:
        fn()
    return counter.get_total_flops()


def fraction_of_peak(flops_per_image: float, images_per_s: float, peak: Optional[DevicePeak],
                     precision: str) -> Dict[str, Optional[float]]:
    """``{'tflops': achieved TFLOP/s, 'peak_tflops': ..., 'fraction': achieved / peak}``; the peak is the bf16 one
    for ``precision`` ``'bf16'``/``'fp16'`` (the same dense rate on these GPUs) and the fp32 one for ``'off'``;
    None where the device or its rate is unknown."""
    achieved = flops_per_image * images_per_s / 1e12
    rate = None if peak is None else peak.fp32 if precision == "off" else peak.bf16
    return {"tflops": achieved, "peak_tflops": rate, "fraction": achieved / rate if rate else None}
