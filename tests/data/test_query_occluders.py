"""Band occluders of the robustness curves: exact boxes, what each kind paints, determinism, bad inputs."""
from __future__ import annotations

import numpy as np
import pytest

from lfem_plugin.data.query_occluders import band_box, check_sweep, occlude_query


@pytest.mark.parametrize("area,position,left,expected", [
    (0.25, "bottom", True, (48, 0, 16, 32)), (0.25, "top", True, (0, 0, 16, 32)),
    (0.25, "side", True, (0, 0, 64, 8)), (0.25, "side", False, (0, 24, 64, 8)),
    (0.0, "bottom", True, (64, 0, 0, 32)), (0.5, "top", False, (0, 0, 32, 32)),
    (0.1, "bottom", True, (58, 0, 6, 32)),  # 6.4 rows -> 6
    (0.3, "side", True, (0, 0, 64, 10)),  # 9.6 columns -> 10
])
def test_band_box_is_exact(area, position, left, expected):
    assert band_box(64, 32, area, position, left) == expected


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (16, 8, 3), dtype=np.uint8), rng.integers(0, 256, (16, 8, 3), dtype=np.uint8))


@pytest.mark.parametrize("kind", ["scene", "person", "noise", "erase"])
def test_only_the_band_changes(kind):
    image, donor = _pair()
    out, box = occlude_query(image, donor, kind, 0.25, "bottom", np.random.default_rng(3), fill=(1, 2, 3))
    assert box == (12, 0, 4, 8)
    np.testing.assert_array_equal(out[:12], image[:12])
    assert not np.array_equal(out[12:], image[12:])
    if kind == "person":
        np.testing.assert_array_equal(out[12:], donor[12:])
    if kind == "erase":
        assert (out[12:] == np.array([1, 2, 3], dtype=np.uint8)).all()


def test_scene_comes_from_the_donor_border_columns():
    image, donor = _pair()
    donor[:, 2:6] = 0  # the middle (the person); the outer quarters (columns 0-1, 6-7) are the scene
    donor[:, :2], donor[:, 6:] = 200, 200
    out, _ = occlude_query(image, donor, "scene", 0.5, "top", np.random.default_rng(0))
    assert (out[:8] == 200).all()


def test_same_seed_same_pixels_and_box_other_seed_differs():
    image, donor = _pair()
    a = occlude_query(image, donor, "noise", 0.3, "side", np.random.default_rng([5, 2, 0]))
    b = occlude_query(image, donor, "noise", 0.3, "side", np.random.default_rng([5, 2, 0]))
    assert a[1] == b[1]
    np.testing.assert_array_equal(a[0], b[0])
    c = occlude_query(image, donor, "noise", 0.3, "side", np.random.default_rng([6, 2, 0]))
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("kinds,areas,positions,message", [
    (["fog"], [0.1], ["top"], "kind"), (["noise"], [0.6, 1.0], ["top"], r"\[0, 1\)"),
    (["noise"], [-0.1], ["top"], "area"), (["noise"], [0.1], ["middle"], "position"),
    ([], [0.1], ["top"], "kind"), (["noise"], [], ["top"], "area"),
])
def test_bad_sweeps_are_refused(kinds, areas, positions, message):
    with pytest.raises(ValueError, match=message):
        check_sweep(kinds, areas, positions)


def test_a_donor_of_another_size_is_refused():
    image, _ = _pair()
    with pytest.raises(ValueError, match="differ in size"):
        occlude_query(image, np.zeros((8, 8, 3), np.uint8), "person", 0.2, "top", np.random.default_rng(0))
