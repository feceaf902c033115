"""The model's FLOPs counted by torch's counter against a hand count; the GPU peak table."""
import pytest
import torch

from lfem_plugin.engine.engines import Batch

from lfem_plugin.registry import MODELS
from lfem_plugin.utils.flops import count_flops, device_peak, fraction_of_peak

from ..helpers import tiny_engine


def _views(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 64, 32, generator=g) for _ in range(3)]


def _hand_count_forward(model, images, cameras) -> int:
    """An independent count of the forward: 2 FLOPs per multiply-add of every Linear and Conv2d as it runs, 4 * N^2 *
    C per attention (q @ k^T and attn @ v over N tokens of width C) and SIE's one-hot row selection."""
    total = [0]

    def linear(mod, inp, out):
        total[0] += 2 * out.numel() * mod.in_features

    def conv(mod, inp, out):
        total[0] += 2 * out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups

    def attention(mod, inp, out):
        batch, tokens, width = inp[0].shape
        total[0] += 4 * batch * tokens * tokens * width
    hooks = [m.register_forward_hook({"Linear": linear, "Conv2d": conv, "Attention": attention}[type(m).__name__])
             for m in model.modules() if type(m).__name__ in ("Linear", "Conv2d", "Attention")]
    with torch.no_grad():
        model(images, camera=cameras)
    for hook in hooks:
        hook.remove()
    sie = model.backbone.sie
    return total[0] + 2 * images.shape[0] * sie.num_cameras * sie.table.shape[-1]


def test_flop_count_of_the_tiny_model_matches_a_hand_count():
    model = MODELS.get("lfem_vit_tiny")(num_classes=4, loss="triplet").eval()
    images, cameras = torch.randn(2, 3, 64, 32), torch.tensor([0, 1])
    with torch.no_grad():
        counted = count_flops(lambda: model(images, camera=cameras))
    assert counted == _hand_count_forward(model, images, cameras) == 22903296


def test_training_flops_are_forward_plus_backward():
    engine = tiny_engine()
    views, cameras, pids = torch.stack(_views()), torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    with torch.no_grad():
        forward = count_flops(lambda: engine.training_step(Batch(views, cameras, pids)))
    step = count_flops(lambda: engine.training_step(Batch(views, cameras, pids)).loss.backward())
    # backward of a product is two products (input and weight gradients), less the image's gradient in the patch
    # embedding: between 2x and 3x the forward in all
    assert 2.5 * forward < step < 3 * forward


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", ("H100 SXM", 989.0, 67.0)), ("NVIDIA H100 PCIe", ("H100 PCIe", 756.0, 51.0)),
    ("NVIDIA H200", ("H200", 989.0, 67.0)), ("NVIDIA A100-SXM4-80GB", ("A100", 312.0, 19.5)),
    ("NVIDIA A10", ("A10", 125.0, 31.2)), ("NVIDIA L4", ("L4", 121.0, 30.3)),
    ("NVIDIA GeForce RTX 4090", ("RTX 4090", 165.2, 82.6)), ("Tesla V100-SXM2-32GB", ("V100 SXM2", None, 15.7)),
    ("NVIDIA GeForce GTX 1080", None), ("cpu (2 threads)", None)])
def test_peak_table_lookup(name, peak):
    assert device_peak(name) == (peak if peak is None else tuple(peak))


def test_fraction_of_peak():
    h100 = device_peak("NVIDIA H100 80GB HBM3")
    bf16 = fraction_of_peak(141e9, 1400.0, h100, "bf16")  # 141 GFLOPs per image at 1,400 images/s
    assert bf16["tflops"] == pytest.approx(197.4) and bf16["fraction"] == pytest.approx(197.4 / 989)
    assert fraction_of_peak(141e9, 100.0, h100, "off")["fraction"] == pytest.approx(14.1 / 67)
    assert fraction_of_peak(1e9, 10.0, None, "bf16") == {"tflops": 0.01, "peak_tflops": None, "fraction": None}
    assert fraction_of_peak(1e9, 10.0, device_peak("Tesla V100-PCIE-16GB"), "bf16")["fraction"] is None
