"""Images as users have them (issue 26): every mode, transparency, EXIF orientation, an undecodable file, read by
``data/io.py``'s ``read_image``."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lfem_plugin.data.io import BadImageError, read_image


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
