"""Damaged and cut-short checkpoints are refused by name (issue 38, cases 2 and 4: ``utils/checkpoint_file.py``), and
non-finite features are never written, ranked or scored (``utils/finite.py``)."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from lfem_plugin.cli import main
from lfem_plugin.models.pretrained import load_state_dict_file
from lfem_plugin.utils.checkpoint import DamagedCheckpointError, load_checkpoint, save_checkpoint
from lfem_plugin.utils.finite import NonFiniteFeaturesError, require_finite_features

from ..tools.test_search import _checkpoint, _images


def _damage(path, tensor: torch.Tensor, offset: int = 64, length: int = 64) -> None:
    """Overwrite ``length`` bytes inside ``tensor``'s stored bytes (the zip directory stays intact)."""
    data = bytearray(path.read_bytes())
    start = data.find(tensor.numpy().tobytes())
    assert start > 0
    data[start + offset:start + offset + length] = b"\xff" * length  # 0xffffffff: a float32 NaN
    path.write_bytes(bytes(data))


def test_a_damaged_tensor_is_refused_naming_the_member_and_the_tensor(tmp_path):
    weights = {"a": torch.arange(64.0), "b": torch.linspace(0, 1, 300)}
    path = save_checkpoint({"state_dict": weights, "epoch": 3}, tmp_path / "model.pth.tar-3")
    _damage(path, weights["b"])
    member = [i.filename for i in zipfile.ZipFile(path).infolist() if i.file_size == 1200][0]
    with pytest.raises(DamagedCheckpointError) as err:
        load_checkpoint(path)
    assert f"checkpoint {path} is damaged: 1 zip member(s)" in str(err.value)
    assert f"{member} (1200 bytes" in str(err.value) and "it holds state_dict.b." in str(err.value)
    with pytest.raises(DamagedCheckpointError, match="is damaged"):  # the ImageNet loader checks too
        load_state_dict_file(path)


def test_an_intact_checkpoint_loads_unchanged(tmp_path):
    weights = {"a": torch.arange(64.0), "b": torch.linspace(0, 1, 300)}
    path = save_checkpoint({"state_dict": weights, "epoch": 3}, tmp_path / "model.pth.tar-3")
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and all(torch.equal(loaded["state_dict"][k], v) for k, v in weights.items())


def test_extract_refuses_a_damaged_checkpoint_with_exit_2(tmp_path, capsys):
    _checkpoint(tmp_path / "a.pth", 0)
    state = torch.load(tmp_path / "a.pth", weights_only=True)
    _damage(tmp_path / "a.pth", state["state_dict"]["backbone.blocks.0.mlp.fc1.weight"])
    _images(tmp_path / "q", ["x.png"], 0)
    assert main(["extract", "--weights", str(tmp_path / "a.pth"), "--images", str(tmp_path / "q"),
                 "--out", str(tmp_path / "f.npy")]) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and "state_dict.backbone.blocks.0.mlp.fc1.weight" in err
    assert not (tmp_path / "f.npy").exists()


def test_a_truncated_checkpoint_is_called_incomplete_not_a_pickle(tmp_path):
    path = save_checkpoint({"state_dict": {"a": torch.arange(1000.0)}}, tmp_path / "model.pth.tar-1")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DamagedCheckpointError) as err:
        load_checkpoint(cut)
    text = str(err.value)
    assert text.startswith(f"checkpoint {cut} is incomplete (2000 bytes; the zip's end record is missing")
    assert "pickled" not in text and "use an earlier checkpoint" in text


class _Pickled:
    pass


def test_a_pickle_keeps_the_pickle_message_with_torchs_reason_whole(tmp_path):
    torch.save({"x": _Pickled()}, tmp_path / "p.pth")
    with pytest.raises(RuntimeError) as err:
        load_checkpoint(tmp_path / "p.pth")
    text = str(err.value)
    assert "pickled Python objects" in text and f"GLOBAL {__name__}._Pickled was not an allowed global by default." \
        in text


def test_non_finite_features_are_refused_naming_the_images():
    feats = np.ones((4, 3), dtype=np.float32)
    require_finite_features(feats, ["a", "b", "c", "d"], "extract")  # finite: nothing raised
    feats[1, 2], feats[3, 0] = np.nan, np.inf
    with pytest.raises(NonFiniteFeaturesError, match=r"^extract: 2 of 4 features hold NaN or inf \(e.g. b, d\)"):
        require_finite_features(feats, ["a", "b", "c", "d"], "extract")
    with pytest.raises(NonFiniteFeaturesError, match=r"e.g. row 1, row 3"):
        require_finite_features(torch.from_numpy(feats), None, "test")


def _nan_checkpoint(path, num_classes: int = 4):
    """A checkpoint whose weights give NaN features: a NaN in the patch embedding (6 classes: the synthetic set's
    training split)."""
    from lfem_plugin.config import load_config
    from lfem_plugin.registry import MODELS
    size = ["data.height", "64", "data.width", "32"]
    model = MODELS.get("lfem_vit_tiny")(num_classes=num_classes, img_size=(64, 32))
    state = {"state_dict": model.state_dict(), "epoch": 1,
             "config": load_config(None, ["model.name", "lfem_vit_tiny", "use_gpu", "False", *size]).dump()}
    state["state_dict"]["backbone.patch_embed.proj.bias"][0] = float("nan")
    torch.save(state, path)


@pytest.mark.parametrize("command", ["extract", "search"])
def test_extract_and_search_refuse_nan_features_and_write_nothing(tmp_path, capsys, command):
    _nan_checkpoint(tmp_path / "a.pth")
    _images(tmp_path / "q", ["0001_c1_x.png"], 0)
    _images(tmp_path / "g", ["0001_c2_y.png", "0002_c2_z.png"], 1)
    args = (["--images", str(tmp_path / "q"), "--out", str(tmp_path / "out" / "f.npy")] if command == "extract" else
            ["--query", str(tmp_path / "q"), "--gallery", str(tmp_path / "g"), "--out", str(tmp_path / "out"),
             "--device", "cpu"])
    assert main([command, "--weights", str(tmp_path / "a.pth"), *args]) == 2
    err = capsys.readouterr().err
    assert "features hold NaN or inf" in err and ("0001_c" in err), err
    out = tmp_path / "out"
    assert not out.exists() or not [p for p in out.rglob("*") if p.suffix in (".npy", ".csv", ".json", ".png")]


def test_test_refuses_nan_features_naming_the_images(tmp_path, capsys):
    from ..helpers import register_synthetic, write_synthetic_reid
    write_synthetic_reid(tmp_path / "data")
    register_synthetic()
    _nan_checkpoint(tmp_path / "a.pth", num_classes=6)
    assert main(["test", "--weights", str(tmp_path / "a.pth"), "data.root", str(tmp_path / "data"), "data.sources",
                 "['synthetic_reid']", "data.targets", "['synthetic_reid']", "data.workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "evaluation of synthetic_reid (query): 4 of 4 features hold NaN or inf" in err, err
    assert "synthetic_reid/query/0100_c1_f0000000.jpg" in err
