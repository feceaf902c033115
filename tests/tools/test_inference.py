"""A checkpoint knows its model (issue 26): ``test`` and ``extract`` rebuild it from the stored config, at another
input size with the position embedding resampled (``tools/inference.py``, ``utils/checkpoint.py``), or refuse with
what to do."""
from __future__ import annotations

import json

import pytest

from lfem_plugin.cli import main

from ..commands import test_cli_errors
from .test_search import _images


# ---- a checkpoint knows its model; a checkpoint at another input size ---------------------------------------------
trained = test_cli_errors.trained  # the module-scoped 1-epoch 64x32 checkpoint with its config (and data root)


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


def test_stored_model_args_from_a_newer_version_load_and_unknown_keys_are_named(tmp_path, caplog):
    """Old code: ``BuildArgs(**model_args)`` refused a checkpoint whose model_args had a field added later."""
    import torch

    from lfem_plugin.models.interface import BuildArgs
    from lfem_plugin.tools.inference import load_trained
    model = _tiny_checkpoint(tmp_path / "a.pth", (64, 32))
    state = torch.load(tmp_path / "a.pth", weights_only=True)
    state["model_args"] = dict(model.build_args()._asdict(), num_classes=4, future_field=[1, 2])
    torch.save(state, tmp_path / "a.pth")
    loaded, _ = load_trained(str(tmp_path / "a.pth"))
    assert loaded.build_args() == model.build_args() and loaded.build_args().num_classes == 4
    assert "['future_field'] are not known to this version" in caplog.text
    assert BuildArgs.from_stored({"num_classes": 3, "num_cameras": 2, "camera_ids": [5, 7]}) == (3, 2, [5, 7])
    with pytest.raises(TypeError, match="camera_ids"):
        BuildArgs.from_stored({"num_classes": 3, "num_cameras": 2})
