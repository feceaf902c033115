"""A trained model in a tracker: graphs that take what BoxMOT / Ultralytics feed (one fused affine), their file
contract (one input `images`, batch dim `batch`, static H x W, one output, BoxMOT's sidecar), and the Embedder's
defined result for every box a detector gives."""
import json

import numpy as np
import onnx
import pytest
import torch

from lfem_plugin.cli import main
from lfem_plugin.models.pretrained import IMAGENET_MEAN, IMAGENET_STD
from lfem_plugin.tools.embedder import Embedder, as_bgr_frame
from lfem_plugin.tools.robustness import load_any
from lfem_plugin.tools.tracker_export import FED_STATS, TrackerGraph, tracker_crops, tracker_model

from .test_robustness_curves import _checkpoint


@pytest.fixture()
def ckpt(tmp_path):
    return _checkpoint(tmp_path / "m.pth")


def test_the_fused_affine_is_the_notes_one_and_gives_the_models_own_features(ckpt):
    model, _ = load_any(str(ckpt))
    graph = TrackerGraph(tracker_model(model), IMAGENET_MEAN, IMAGENET_STD, [0.5] * 3, [0.5] * 3).eval()
    assert np.allclose(graph.scale.flatten(), [0.458, 0.448, 0.450], atol=1e-9)  # 2 sigma_imagenet
    assert np.allclose(graph.bias.flatten(), [-0.030, -0.088, -0.188], atol=1e-9)  # 2 mu_imagenet - 1
    x01 = torch.rand(3, 3, 64, 32)
    fed = (x01 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        own = tracker_model(model)((x01 - 0.5) / 0.5, camera=torch.full((3,), -1))
        assert torch.allclose(graph(fed), own, atol=1e-5)


def _onnx_contract(path):
    graph = onnx.load(str(path)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    return [i.name for i in graph.input], len(graph.output), dims


@pytest.mark.parametrize("target", ["boxmot", "ultralytics"])
def test_export_for_a_tracker_writes_its_contract_and_checks_it(ckpt, tmp_path, capsys, target):
    out = tmp_path / f"{target}.onnx"
    assert main(["export", "onnx", "--for", target, "--weights", str(ckpt), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # the JSON line is JSON
    assert report["target"] == target and report["max_abs_diff"] < 1e-3 and report["sie"] == "mean camera row"
    assert _onnx_contract(out) == (["images"], 1, ["batch", 3, 64, 32])
    sidecar = out.with_name(out.name + ".metadata.json")
    assert sidecar.exists() == (target == "boxmot")
    if target == "boxmot":
        meta = json.loads(sidecar.read_text())
        assert meta["img_size"] == [64, 32] and meta["model_name"] == "lfem_vit_tiny"
        assert meta["preprocess"]["mean"] == list(IMAGENET_MEAN)
    import onnxruntime as ort
    fed_mean, fed_std = FED_STATS[target]
    x01 = np.random.default_rng(0).random((4, 3, 64, 32)).astype(np.float32)
    fed = ((x01 - np.array(fed_mean).reshape(1, 3, 1, 1)) / np.array(fed_std).reshape(1, 3, 1, 1)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": fed})[0]
    model, _ = load_any(str(ckpt))
    with torch.no_grad():
        ref = tracker_model(model)(torch.from_numpy((x01 - 0.5) / 0.5), camera=torch.full((4,), -1)).numpy()
    assert np.abs(got - ref).max() < 1e-4


def test_torchscript_for_boxmot_and_refused_combinations(ckpt, tmp_path, capsys):
    out = tmp_path / "m.torchscript"
    assert main(["export", "torchscript", "--for", "boxmot", "--weights", str(ckpt), "--out", str(out)]) == 0
    traced = torch.jit.load(str(out))
    x01 = torch.rand(5, 3, 64, 32)  # traced at batch 2: other batch sizes give the model's features
    fed = (x01 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    model, _ = load_any(str(ckpt))
    with torch.no_grad():
        ref = tracker_model(model)((x01 - 0.5) / 0.5, camera=torch.full((5,), -1))
        assert torch.allclose(traced(fed), ref, atol=1e-4) and traced(fed[:1]).shape == (1, 64)
    for argv, message in ((["torchscript", "--for", "ultralytics"], "torchscript for boxmot"),
                          (["onnx", "--for", "boxmot", "--with-camera"], "trackers feed one input")):
        assert main(["export", *argv, "--weights", str(ckpt), "--out", str(tmp_path / "x.onnx")]) == 2
        assert message in capsys.readouterr().err


@pytest.fixture()
def embedder(ckpt):
    return Embedder(str(ckpt))


def _frame():
    return np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)


def test_embedder_gives_the_models_feature_of_the_trackers_crop(embedder, ckpt):
    frame, box = _frame(), np.array([[20.0, 10.0, 52.0, 74.0]])
    crops = tracker_crops(frame, box, 64, 32)
    model, _ = load_any(str(ckpt))
    with torch.no_grad():
        ref = tracker_model(model)(torch.from_numpy((crops - 0.5) / 0.5), camera=torch.full((1,), -1)).numpy()
    got = embedder.get_features(box, frame)
    assert got.dtype == np.float32 and np.allclose(got, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)


def test_embedder_defines_every_box_a_detector_gives(embedder):
    frame = _frame()
    assert embedder.get_features(np.zeros((0, 4)), frame).shape == (0, embedder.dim)
    assert embedder.get_features([], frame).shape == (0, embedder.dim)
    inside = embedder.get_features([[0, 0, 30, 40]], frame)
    assert np.allclose(embedder.get_features([[-25, -30, 30, 40]], frame), inside, atol=1e-6)  # the part inside
    odd = [[500, 500, 600, 600], [40, 40, 40, 40], [60, 70, 50, 65], [10, 10, 10.4, 10.4]]  # outside, empty, flipped
    feats = embedder.get_features(odd, frame)
    assert feats.shape == (4, embedder.dim) and np.isfinite(feats).all()
    assert np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    corner = embedder.get_features([[159, 119, 160, 120]], frame)  # the nearest pixel of the first box
    assert np.allclose(feats[0], corner[0], atol=1e-6)
    with pytest.raises(ValueError, match="non-finite"):
        embedder.get_features([[0, 0, np.nan, 5]], frame)


def test_embedder_takes_detection_rows_and_refuses_other_shapes(embedder):
    """BoxMOT-style rows (x1 y1 x2 y2 conf cls ...) give one feature each; a flat list is not reshaped into boxes."""
    frame, boxes = _frame(), np.array([[0, 0, 30, 40], [50, 20, 90, 110], [10, 5, 60, 70]], float)
    want = embedder.get_features(boxes, frame)
    for columns in (6, 8):
        rows = np.c_[boxes, np.full((3, columns - 4), 0.9)]
        assert np.array_equal(embedder.get_features(rows, frame), want)
    assert np.allclose(embedder.get_features(boxes[0], frame), want[:1], atol=1e-6)  # one (4,) box (a batch of 1)
    for bad in (boxes.ravel(), boxes[:, :3], boxes[None]):
        with pytest.raises(ValueError, match=r"boxes of shape .*: give \(N, 4\)"):
            embedder.get_features(bad, frame)


def test_embedder_frames_and_crops_of_every_channel_layout(embedder):
    frame = _frame()
    grey, bgra = frame[:, :, 0], np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)])
    assert np.array_equal(as_bgr_frame(bgra), frame) and as_bgr_frame(grey).shape == (120, 160, 3)
    assert np.allclose(embedder.get_features([[0, 0, 40, 80]], bgra), embedder.get_features([[0, 0, 40, 80]], frame))
    assert embedder.embed_crops([frame[:80, :40], grey[:80, :40], bgra[:80, :40]]).shape == (3, embedder.dim)
    with pytest.raises(ValueError, match=r"crop 1 of shape \(0, 5, 3\)"):
        embedder.embed_crops([frame[:8, :4], np.zeros((0, 5, 3), np.uint8)])
    with pytest.raises(ValueError, match="give an \\(H, W, 3\\) BGR image"):
        embedder.get_features([[0, 0, 4, 4]], np.zeros((3, 4, 5, 6)))


def test_embedder_on_onnx_runtime_matches_torch(ckpt, embedder):
    boxes, frame = [[0, 0, 30, 40], [50, 20, 90, 110]], _frame()
    onnx_embedder = Embedder(str(ckpt), backend="onnx", batch_size=1)
    assert np.abs(onnx_embedder.get_features(boxes, frame) - embedder.get_features(boxes, frame)).max() < 1e-4
    with pytest.raises(ValueError, match="backend 'tensorrt'"):
        Embedder(str(ckpt), backend="tensorrt")
