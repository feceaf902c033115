"""Inputs as users have them (issue 26): image modes, checkpoints at other sizes, caches, missing extras."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from lfem_plugin.cli import main
from lfem_plugin.data.io import BadImageError, read_image

from .commands import test_cli_errors
from .tools.test_search import _checkpoint, _images


def _saved(tmp_path, img: Image.Image, name: str, **save) -> str:
    path = tmp_path / name
    img.save(path, **save)
    return str(path)


def _rgb(path: str) -> np.ndarray:
    out = read_image(path)
    assert out.mode == "RGB"
    return np.asarray(out)


@pytest.mark.parametrize("mode, name", [("I;16", "a.png"), ("I;16B", "a.tif"), ("I", "a.tif")])
def test_16_bit_greyscale_is_scaled_to_8_bits_not_clipped(tmp_path, mode, name):
    values = np.array([[0, 257, 128 * 257], [65535, 1000, 60000]], dtype=np.uint16)
    img = Image.fromarray(values.astype(np.int32), "I").convert(mode) if mode != "I;16" else Image.fromarray(values)
    path = _saved(tmp_path, img, name)
    assert Image.open(path).mode in (mode, "I", "I;16")  # what the file decodes to
    got = _rgb(path)
    expected = np.round(values / 257.0).astype(np.uint8)  # 0, 1, 128, 255, 4, 233
    assert (got == expected[..., None]).all()


def test_the_issue_16_bit_picture_is_no_longer_white(tmp_path):
    values = np.arange(96 * 48, dtype=np.uint16).reshape(96, 48) * 13
    got = _rgb(_saved(tmp_path, Image.fromarray(values), "a.png"))
    assert abs(got.mean() - values.mean() / 257) < 0.5  # about 115, not 254


def test_float_greyscale_reads_0_to_1_and_refuses_other_ranges(tmp_path):
    ok = _saved(tmp_path, Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F"), "f.tif")
    assert _rgb(ok)[0, :, 0].tolist() == [0, 128, 255]
    bad = _saved(tmp_path, Image.fromarray(np.array([[0.0, 300.0]], np.float32), "F"), "g.tif")
    with pytest.raises(BadImageError, match=r"g\.tif.*0\.\.300.*0\.\.1"):
        read_image(bad)


def test_transparency_is_composited_over_white(tmp_path):
    rgba = Image.fromarray(np.array([[[0, 0, 0, 0], [10, 20, 30, 255], [0, 0, 0, 128]]], np.uint8), "RGBA")
    assert _rgb(_saved(tmp_path, rgba, "a.png"))[0].tolist() == [[255] * 3, [10, 20, 30], [127] * 3]
    la = Image.fromarray(np.array([[[0, 0], [40, 255]]], np.uint8), "LA")
    assert _rgb(_saved(tmp_path, la, "b.png"))[0].tolist() == [[255] * 3, [40] * 3]
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.putpixel((1, 0), 1)
    assert _rgb(_saved(tmp_path, pal, "c.png", transparency=0))[0].tolist() == [[255] * 3, [200, 10, 10]]
    assert _rgb(_saved(tmp_path, pal, "d.png"))[0].tolist() == [[0] * 3, [200, 10, 10]]  # no transparency: as is


def test_cmyk_and_one_bit_images(tmp_path):
    cmyk = Image.fromarray(np.array([[[255, 0, 0, 0], [0, 0, 0, 255], [0, 255, 0, 0]]], np.uint8), "CMYK")
    assert _rgb(_saved(tmp_path, cmyk, "a.tif"))[0].tolist() == [[0, 255, 255], [0, 0, 0], [255, 0, 255]]
    one = Image.new("1", (2, 1))
    one.putpixel((0, 0), 1)
    assert _rgb(_saved(tmp_path, one, "b.png"))[0].tolist() == [[255] * 3, [0] * 3]


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[0, 0] = (255, 0, 0)  # red top-left of the stored pixels
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    got = _rgb(_saved(tmp_path, img, "a.png", exif=exif.tobytes()))
    assert got.shape == (3, 2, 3) and got[0, 1].tolist() == [255, 0, 0]  # the viewer's picture: red top-right


def test_undecodable_file_names_the_file(tmp_path):
    path = tmp_path / "broken.png"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    path.write_bytes(buf.getvalue()[:40])
    with pytest.raises(BadImageError, match="broken.png"):
        read_image(str(path))


# ---- search: the cache knows what determines a feature; ranked/ shows one run -----------------------------------
trained = test_cli_errors.trained  # the module-scoped 1-epoch 64x32 checkpoint with its config (and data root)


def _search_args(tmp_path, *extra):
    return ["search", "--weights", str(tmp_path / "a.pth"), "--query", str(tmp_path / "query"), "--gallery",
            str(tmp_path / "gallery"), "--top-k", "2", "--device", "cpu", "--out", str(tmp_path / "out"), *extra]


def test_search_sees_a_gallery_file_replaced_in_place(tmp_path, capsys):
    _checkpoint(tmp_path / "a.pth", 0)
    _images(tmp_path / "query", ["q.png"], 1)
    _images(tmp_path / "gallery", ["g0.png", "g1.png", "g2.png"], 2)
    assert main(_search_args(tmp_path)) == 0
    assert "extracted and cached" in capsys.readouterr().out
    (tmp_path / "gallery" / "g1.png").write_bytes((tmp_path / "query" / "q.png").read_bytes())  # same name, new person
    assert main(_search_args(tmp_path)) == 0
    assert "extracted and cached" in capsys.readouterr().out
    top = json.loads((tmp_path / "out" / "results.json").read_text())[str(tmp_path / "query" / "q.png")][0]
    assert top["gallery"].endswith("g1.png") and top["distance"] < 1e-5


def test_search_cache_follows_the_model_config_not_only_the_weights(tmp_path, capsys):
    _checkpoint(tmp_path / "a.pth", 0)
    _images(tmp_path / "query", ["q.png"], 1)
    _images(tmp_path / "gallery", ["g0.png", "g1.png"], 2)
    assert main(_search_args(tmp_path)) == 0
    capsys.readouterr()
    assert main(_search_args(tmp_path, "--set", "lfem.eval_feature", "concat")) == 0  # same file, other feature
    assert "extracted and cached" in capsys.readouterr().out


def test_a_second_search_leaves_only_its_own_pictures(tmp_path, capsys):
    _checkpoint(tmp_path / "a.pth", 0)
    _images(tmp_path / "query", ["q0.png", "q1.png", "q2.png"], 1)
    _images(tmp_path / "gallery", ["g0.png", "g1.png"], 2)
    assert main(_search_args(tmp_path)) == 0
    (tmp_path / "out" / "ranked" / "mine.txt").write_text("a user's file")
    for name in ("q1.png", "q2.png"):
        (tmp_path / "query" / name).unlink()
    assert main(_search_args(tmp_path)) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "ranked").iterdir()) == ["000_q0.png", "mine.txt"]


@pytest.mark.parametrize("command", ["search", "extract"])
def test_cameras_from_name_advice_names_options_the_command_accepts(tmp_path, capsys, command):
    import re

    from lfem_plugin.cli import build_parser
    _checkpoint(tmp_path / "a.pth", 0)
    _images(tmp_path / "query", ["holiday.png"], 1)
    _images(tmp_path / "gallery", ["g0.png"], 2)
    args = (_search_args(tmp_path) if command == "search" else
            ["extract", "--weights", str(tmp_path / "a.pth"), "--images", str(tmp_path / "query"), "--device", "cpu",
             "--out", str(tmp_path / "f.npy")]) + ["--cameras", "from-name"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holiday.png" in err and "NNNN_cC" in err
    advised = re.findall(r"--cameras ([\w-]+)", err.split("from-name:", 1)[1])
    assert advised  # some advice, and each value works with this command
    for value in advised:
        build_parser().parse_args(args[:-2] + ["--cameras", value])


# ---- a broken environment names the package that is really missing ------------------------------------------
_BLOCK_TENSORBOARD = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "tensorboard":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
sys.argv = ["lfem-reid", "--version"]
runpy.run_module("lfem_plugin", run_name="__main__")
"""


def test_a_missing_torchreid_dependency_is_named(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", _BLOCK_TENSORBOARD], capture_output=True, text=True, env=env,
                          check=False, timeout=120)
    assert proc.returncode != 0
    assert "pip install tensorboard" in proc.stderr and "cannot find torchreid" not in proc.stderr


def test_a_missing_torchreid_is_still_named_torchreid():
    from lfem_plugin._torchreid import resolve_root
    with pytest.raises(ImportError, match="cannot find torchreid"):
        resolve_root(("no_such_torchreid_layout",))


# ---- export onnx without the [onnx] extra ---------------------------------------------------------------------
def test_export_without_onnxruntime_names_the_extra_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import sys
    _checkpoint(tmp_path / "a.pth", 0)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` sees when it is not installed
    out = tmp_path / "m.onnx"
    assert main(["export", "onnx", "--weights", str(tmp_path / "a.pth"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "onnxruntime" in err and "pip install 'lfem_plugin[onnx]'" in err and "Traceback" not in err
    assert not out.exists()


# ---- preflight: a BatchNorm that would see one sample -----------------------------------------------------------
def test_check_batch_norm_on_hand_built_models():
    from torch import nn

    from lfem_plugin.tools.preflight import PreflightError, check_batch_norm
    head = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    check_batch_norm(head, 2)
    check_batch_norm(nn.Sequential(nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3)), 1)  # one image still has H x W values
    with pytest.raises(PreflightError, match=r"train.batch_size 1 gives 1 sample.*1 BatchNorm layers \(e.g. 1\)"):
        check_batch_norm(head, 1)
    with pytest.raises(PreflightError, match="train.batch_size 3 shared by 2 processes gives 1 sample"):
        check_batch_norm(head, 3, world_size=2)


def test_train_batch_size_1_is_refused_before_training(synthetic_root, tmp_path, capsys):
    from .helpers import CPU_CONFIG, SMALL
    argv = ["train", "--config-file", str(CPU_CONFIG), "data.root", str(synthetic_root), "data.save_dir",
            str(tmp_path / "run"), "train.max_epoch", "1", *SMALL, "train.batch_size", "1", "sampler.num_instances",
            "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "train.batch_size 1 gives 1 sample(s) per step" in err and "BatchNorm" in err
    assert not (tmp_path / "run" / "model").exists()  # nothing trained


# ---- a checkpoint knows its model; a checkpoint at another input size ---------------------------------------------
def _tiny_checkpoint(path, size, with_config=True):
    import torch

    from lfem_plugin.config import load_config
    from lfem_plugin.registry import MODELS
    model = MODELS.get("lfem_vit_tiny")(num_classes=4, img_size=size)
    state = {"state_dict": model.state_dict(), "epoch": 1}
    if with_config:
        state["config"] = load_config(None, ["model.name", "lfem_vit_tiny", "data.height", str(size[0]),
                                             "data.width", str(size[1])]).dump()
    torch.save(state, path)
    return model


def test_test_rebuilds_the_model_and_data_from_the_checkpoint(trained, capsys):
    _, ckpt = trained
    assert main(["test", "--weights", str(ckpt)]) == 0  # no --config-file, no -s: the checkpoint's own
    assert "synthetic_reid" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_test_at_another_size_resamples_the_position_embedding(trained, capsys, caplog):
    _, ckpt = trained
    assert main(["test", "--weights", str(ckpt), "data.height", "128", "data.width", "64"]) == 0
    assert "trained at 64x32 (7x3 patches) and runs at 128x64 (15x7 patches)" in caplog.text


def test_test_without_a_stored_config_says_what_to_pass(tmp_path, capsys):
    _tiny_checkpoint(tmp_path / "bare.pth", (64, 32), with_config=False)
    assert main(["test", "--weights", str(tmp_path / "bare.pth")]) == 2
    err = capsys.readouterr().err
    assert "holds no config" in err and "--config-file" in err and "-s DATASET" in err


def test_extract_at_another_size_resamples_exactly_and_says_so(tmp_path, caplog):
    import torch
    from timm.layers import resample_abs_pos_embed

    from lfem_plugin.tools.inference import load_trained
    source = _tiny_checkpoint(tmp_path / "a.pth", (64, 32))
    _images(tmp_path / "q", ["x.png"], 0)
    assert main(["extract", "--weights", str(tmp_path / "a.pth"), "--images", str(tmp_path / "q"), "--set",
                 "data.height", "128", "--set", "data.width", "64", "--device", "cpu",
                 "--out", str(tmp_path / "f.npy")]) == 0
    assert "trained at 64x32" in caplog.text and "resampled" in caplog.text
    model, _ = load_trained(str(tmp_path / "a.pth"), opts=["data.height", "128", "data.width", "64"])
    expected = resample_abs_pos_embed(source.backbone.pos_embed.detach(), new_size=[15, 7], old_size=[7, 3],
                                      num_prefix_tokens=1, interpolation="bilinear", antialias=False)
    assert torch.equal(model.backbone.pos_embed.detach(), expected)


def test_an_unknown_trained_size_is_an_error_naming_both_token_counts(tmp_path):
    from lfem_plugin.tools.inference import load_trained
    _tiny_checkpoint(tmp_path / "bare.pth", (64, 32), with_config=False)
    with pytest.raises(ValueError, match=r"holds 21 patch positions.*128x64 has 105.*data.height"):
        load_trained(str(tmp_path / "bare.pth"), opts=["model.name", "lfem_vit_tiny", "data.height", "128",
                                                         "data.width", "64"])


def test_load_weights_at_another_size_keeps_the_position_embedding(tmp_path):
    import torch
    from timm.layers import resample_abs_pos_embed

    from lfem_plugin.registry import MODELS
    from lfem_plugin.utils.checkpoint import load_trained_weights
    source = _tiny_checkpoint(tmp_path / "a.pth", (64, 32))
    model = MODELS.get("lfem_vit_tiny")(num_classes=4, img_size=(128, 64))
    load_trained_weights(model, tmp_path / "a.pth")
    expected = resample_abs_pos_embed(source.backbone.pos_embed.detach(), new_size=[15, 7], old_size=[7, 3],
                                      num_prefix_tokens=1, interpolation="bilinear", antialias=False)
    assert torch.equal(model.backbone.pos_embed.detach(), expected)


def test_feature_extractor_with_a_checkpoint_at_another_size_is_refused_with_what_to_do(tmp_path):
    from lfem_plugin import _torchreid
    _tiny_checkpoint(tmp_path / "b.pth", (96, 48))
    extractor = _torchreid.root().utils.FeatureExtractor
    kwargs = {"model_name": "lfem_vit_tiny", "model_path": str(tmp_path / "b.pth"), "device": "cpu"}
    with pytest.raises(ValueError, match=r"built for 64x32.*trained at 96x48.*load_trained"):
        extractor(image_size=(96, 48), verbose=True, **kwargs)
    with pytest.raises(RuntimeError, match=r"pos_embed was not in the weights loaded.*64x32.*load_trained"):
        extractor(image_size=(64, 32), verbose=False, **kwargs)  # the old advice: the embedding silently lost
