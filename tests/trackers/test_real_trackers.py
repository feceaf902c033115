"""Our tracker exports and the Embedder inside the real trackers (the `[trackers]` extra: BoxMOT, Ultralytics,
deep-sort-realtime), as a user puts them there: BoxMOT's own ONNX and TorchScript backends and Ultralytics' ReID
encoder load our files and give, on crops cut from a generated BGR frame, the model's own features; BoxMOT's BoT-SORT,
Ultralytics' BOTSORT and deep-sort-realtime track a generated sequence with given detections, and their tracks hold
those features. On that sequence box overlap alone keeps the identities (lanes apart, small steps): these tests show
the trackers run on our features, not that appearance improves their association.

These packages are AGPL-3.0 (BoxMOT, Ultralytics) and deep-sort-realtime is MIT: the package never imports them;
only these tests do, and they skip where the extra is not installed."""

import numpy as np
import pytest
import torch

from lfem_plugin.cli import main
from lfem_plugin.tools.embedder import Embedder
from lfem_plugin.tools.robustness import load_any
from lfem_plugin.tools.tracker_export import tracker_model

from ..tools.test_robustness_curves import _checkpoint

pytestmark = pytest.mark.slow  # each loads a tracker package and runs a tiny model over frames (5-20 s on 2 cores)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("YOLO_OFFLINE", "1")  # Ultralytics: no update checks or downloads

# The frame: people of distinct texture walking right over a grey street, boxes partly outside at the edges.
FRAME_H, FRAME_W = 300, 320
PEOPLE, LANE0, LANE = 3, 20, 90  # people, the top of the first lane, lane spacing (px)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A trained checkpoint and the three tracker files `lfem-reid export` writes for it."""
    folder = tmp_path_factory.mktemp("tracker_exports")
    ckpt = _checkpoint(folder / "model.pth.tar-1")
    files = {}
    for fmt, target in (("onnx", "boxmot"), ("torchscript", "boxmot"), ("onnx", "ultralytics")):
        files[target, fmt] = folder / f"lfem_{target}.{fmt}"
        assert main(["export", fmt, "--for", target, "--weights", str(ckpt), "--out", str(files[target, fmt])]) == 0
    return ckpt, files


def _texture(person: int) -> np.ndarray:
    """A 90 x 36 BGR person: its own seeded coloured texture (two garments), fixed over the sequence."""
    rng = np.random.default_rng(100 + person)
    body = np.empty((90, 36, 3), np.uint8)
    body[:45] = rng.integers(0, 256, 3)  # top garment colour
    body[45:] = rng.integers(0, 256, 3)
    noise = rng.integers(-40, 41, body.shape)
    return np.clip(body.astype(int) + noise, 0, 255).astype(np.uint8)


def sequence(frames: int = 12):
    """Frames and their detections ``(x1, y1, x2, y2, conf, cls)``: ``PEOPLE`` people walking right, 8 px a frame,
    in separate lanes; person 0 starts partly left of the frame."""
    street = np.full((FRAME_H, FRAME_W, 3), 128, np.uint8)
    out = []
    for t in range(frames):
        frame, dets = street.copy(), []
        for p in range(PEOPLE):
            x, y = -12 + 95 * p + 8 * t, LANE0 + LANE * p
            left, right = max(x, 0), min(x + 36, FRAME_W)
            if right > left:
                frame[y:y + 90, left:right] = _texture(p)[:, left - x:right - x]
            dets.append([x, y, x + 36, y + 90, 0.9, 0])
        out.append((frame, np.array(dets, np.float32)))
    return out


def _boxes_and_frame():
    """The first frame (person 0 partly outside it) and its boxes moved by fractions of a pixel, as a detector gives
    them (BoxMOT rounds them to pixels)."""
    frame, dets = sequence()[0]
    jitter = [[0.4, 0.6, -0.3, 0.5], [-0.45, 0.2, 0.7, -0.6], [0.5, 1.5, 2.5, -0.2]]
    return dets[:, :4].astype(np.float64) + jitter, frame


# ---- the exported files through the trackers' own backends ------------------------------------------------------
def test_boxmot_onnx_and_torchscript_backends_give_the_models_features(exported):
    backends = pytest.importorskip("boxmot.reid.backends.onnx_backend")
    from boxmot.reid.backends.torchscript_backend import TorchscriptBackend
    ckpt, files = exported
    boxes, frame = _boxes_and_frame()
    own = Embedder(str(ckpt)).get_features(boxes, frame)  # the model's feature of the crops, as BoxMOT cuts them
    for backend, path in ((backends.ONNXBackend, files["boxmot", "onnx"]),
                          (TorchscriptBackend, files["boxmot", "torchscript"])):
        reid = backend(weights=path, device=torch.device("cpu"), half=False)
        assert tuple(reid.input_shape) == (64, 32)  # the graph's / the sidecar's H x W, not BoxMOT's 256 x 128
        got = reid.get_features(boxes, frame)
        assert got.shape == own.shape and np.abs(got - own).max() < 1e-4, backend.__name__


def test_the_plain_export_in_boxmot_is_silently_wrong(exported, tmp_path):
    """Why the tracker targets exist: the `generic` graph (checkpoint normalisation outside) loads in BoxMOT without a
    word, and its features are not the model's."""
    backends = pytest.importorskip("boxmot.reid.backends.onnx_backend")
    ckpt, _ = exported
    plain = tmp_path / "plain.onnx"
    assert main(["export", "onnx", "--weights", str(ckpt), "--out", str(plain)]) == 0
    boxes, frame = _boxes_and_frame()
    got = backends.ONNXBackend(weights=plain, device=torch.device("cpu"), half=False).get_features(boxes, frame)
    own = Embedder(str(ckpt)).get_features(boxes, frame)
    assert np.abs(got - own).max() > 1e-2


def test_ultralytics_reid_encoder_gives_the_models_features(exported):
    reid_module = pytest.importorskip("ultralytics.trackers.utils.reid")
    ckpt, files = exported
    boxes, frame = _boxes_and_frame()
    encoder = reid_module.ReID(str(files["ultralytics", "onnx"]), device="cpu")  # what `with_reid: True` builds
    assert encoder.imgsz == (64, 32)  # read from the graph's static input
    xywh = np.c_[(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]]
    got = np.stack(encoder(frame, xywh))
    # The model fed the same crops: Ultralytics' own cut (box +2% +10 px) and resize, in [0, 1], then the checkpoint's
    # normalisation (mean = std = 0.5) and the mean SIE camera row, as the graph does inside.
    crops = encoder._crops_to_tensor(encoder._crop_detections(frame, xywh))
    model, _ = load_any(str(ckpt))
    with torch.no_grad():
        own = tracker_model(model)((crops - 0.5) / 0.5, camera=torch.full((len(crops),), -1)).numpy()
    assert got.shape == own.shape and np.abs(got - own).max() < 1e-4


# ---- whole trackers over a generated sequence ---------------------------------------------------------------------
def _track_ids_per_person(per_frame):
    """``{person: set of track ids}`` from ``[(frame, [(track_id, y1)...])]``, matching tracks to people by lane."""
    ids = {p: set() for p in range(PEOPLE)}
    for _, tracks in per_frame:
        for track_id, y1 in tracks:
            ids[int(round((y1 - LANE0) / LANE))].add(int(track_id))
    return ids


@pytest.mark.parametrize("reid", ["onnx file", "Embedder object"])
def test_a_boxmot_tracker_with_reid_tracks_the_sequence_on_our_features(exported, reid):
    boxmot = pytest.importorskip("boxmot")
    ckpt, files = exported
    embedder = Embedder(str(ckpt))
    kwargs = ({"reid_weights": files["boxmot", "onnx"]} if reid == "onnx file" else {"reid_model": embedder})
    tracker = boxmot.BotSort(device="cpu", half=False, use_cmc=False, **kwargs)
    per_frame, checked = [], 0
    for frame, dets in sequence():
        out = tracker.update(dets, frame)  # (M, 8): x1 y1 x2 y2 id conf cls det_index
        per_frame.append((frame, [(row[4], row[1]) for row in out]))
        for track in tracker.active_tracks:  # each track holds the feature of its last detection: ours
            if track.frame_id == tracker.frame_count:
                mine = embedder.get_features(dets[int(track.det_ind), None, :4], frame)[0]
                assert np.abs(track.curr_feat - mine).max() < 1e-4
                checked += 1
    assert checked >= PEOPLE * (len(per_frame) - 1)  # every person, every frame after the first
    ids = _track_ids_per_person(per_frame[2:])
    assert all(len(v) == 1 for v in ids.values()) and len(set().union(*ids.values())) == PEOPLE, ids


BOTSORT_YAML = """tracker_type: botsort
track_high_thresh: 0.25
track_low_thresh: 0.1
new_track_thresh: 0.25
track_buffer: 30
match_thresh: 0.8
fuse_score: True
gmc_method: none
proximity_thresh: 0.5
appearance_thresh: 0.8
with_reid: True
model: {model}
"""  # Ultralytics' botsort.yaml with docs/TRACKERS.md's two changes (with_reid, model); gmc off: a still camera


def test_ultralytics_botsort_with_reid_tracks_the_sequence_on_our_features(exported, tmp_path):
    bot_sort = pytest.importorskip("ultralytics.trackers.bot_sort")
    from ultralytics.engine.results import Boxes
    from ultralytics.utils import YAML, IterableSimpleNamespace
    ckpt, files = exported
    config = tmp_path / "my_botsort.yaml"
    config.write_text(BOTSORT_YAML.format(model=files["ultralytics", "onnx"]))
    tracker = bot_sort.BOTSORT(IterableSimpleNamespace(**YAML.load(config), device="cpu"))  # as `model.track` does
    embedder = Embedder(str(ckpt))
    per_frame, checked = [], 0
    for frame, dets in sequence():
        out = tracker.update(Boxes(torch.from_numpy(dets), frame.shape[:2]).cpu().numpy(), frame)
        per_frame.append((frame, [(row[4], row[1]) for row in out]))
        for track in tracker.tracked_stracks:
            if track.frame_id == tracker.frame_id and track.curr_feat is not None:
                # Ultralytics cuts its crops a little wider (+2% +10 px) than the box: the nearest of our features
                # of this frame's boxes must be its own detection's, and close to it
                cosine = embedder.get_features(dets[:, :4], frame) @ track.curr_feat
                assert int(np.argmax(cosine)) == int(track.idx) and cosine.max() > 0.9, cosine
                checked += 1
    assert checked >= PEOPLE * (len(per_frame) - 1)
    ids = _track_ids_per_person(per_frame[2:])
    assert all(len(v) == 1 for v in ids.values()) and len(set().union(*ids.values())) == PEOPLE, ids


def test_deep_sort_realtime_tracks_the_sequence_on_embedder_features(exported):
    deepsort = pytest.importorskip("deep_sort_realtime.deepsort_tracker")
    ckpt, _ = exported
    embedder = Embedder(str(ckpt))
    tracker = deepsort.DeepSort(embedder=None, max_age=5, n_init=2)  # no embedder of its own: ours
    per_frame, checked = [], 0
    for frame, dets in sequence():
        boxes = dets[:, :4]
        embeds = embedder.get_features(boxes, frame)
        ltwh = [([x1, y1, x2 - x1, y2 - y1], 0.9, "person") for x1, y1, x2, y2 in boxes.tolist()]
        tracks = tracker.update_tracks(ltwh, embeds=list(embeds))
        confirmed = [t for t in tracks if t.is_confirmed() and t.time_since_update == 0]
        for track in confirmed:
            assert np.isclose(np.abs(embeds @ track.get_feature()).max(), 1.0, atol=1e-5)  # one of ours
            checked += 1
        per_frame.append((frame, [(t.track_id, t.to_ltrb()[1]) for t in confirmed]))
    ids = _track_ids_per_person(per_frame[2:])
    assert all(len(v) == 1 for v in ids.values()) and len(set().union(*ids.values())) == PEOPLE, ids
    assert checked >= PEOPLE * (len(per_frame) - 2)  # confirmed from the second frame (n_init 2)
