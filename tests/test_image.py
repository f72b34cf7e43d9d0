"""Image intake: every bad input gets a clear InputError; every common mode becomes RGBA."""
from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from propforge.errors import InputError
from propforge.image import MIN_SIDE, load_cutout, load_image, to_cutout


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A valid ~100-byte PNG whose header claims width x height RGBA pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def noisy_rgb(size: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def on_plain_background(size: int = 96, bg=(255, 255, 255)) -> np.ndarray:
    """A red square with a blue stripe on a plain background (no alpha)."""
    rgb = np.empty((size, size, 3), np.uint8)
    rgb[:] = bg
    rgb[24:72, 30:66] = (200, 30, 30)
    rgb[40:48, 30:66] = (20, 40, 220)
    return rgb


# ---- bad inputs -------------------------------------------------------------------------------


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is not a picture")
    with pytest.raises(InputError, match="not an image"):
        load_image(p)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(InputError, match="folder"):
        load_image(tmp_path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_file(fmt):
    data = encode(Image.fromarray(noisy_rgb(256)), fmt)
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


@pytest.mark.parametrize("size", [(1, 1), (MIN_SIDE - 1, 200), (200, 3)])
def test_too_small(size):
    with pytest.raises(InputError, match="too small"):
        load_image(encode(Image.new("RGBA", size, (255, 0, 0, 255))))


def test_decompression_bomb_rejected_from_header_without_memory_blowup():
    data = bomb_png(30000, 30000)
    assert len(data) < 200
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"900 megapixels.*decompression-bomb"):
            load_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20e6, f"peak traced memory {peak / 1e6:.0f} MB: the bomb was decoded"


def test_pixel_limit_is_configurable(monkeypatch):
    data = bomb_png(9000, 9000)           # 81 MP: under Pillow's own guard, over ours
    with pytest.raises(InputError, match="81 megapixels; the limit is 64"):
        load_image(data)
    ok = encode(Image.new("RGBA", (400, 300), (1, 2, 3, 255)))
    with pytest.raises(InputError, match="limit is 0 megapixels"):
        load_image(ok, max_pixels=100_000)
    monkeypatch.setenv("PROPFORGE_MAX_IMAGE_PIXELS", "100000")
    with pytest.raises(InputError, match="400x300"):
        load_image(ok)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    with pytest.raises(InputError, match="120 megapixels; the limit is 100"):   # above the default 64
        load_image(bomb_png(12000, 10000), max_pixels=100_000_000)
    monkeypatch.setenv("PROPFORGE_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(InputError, match="PROPFORGE_MAX_IMAGE_PIXELS"):
        load_image(ok)


def test_fully_transparent_image():
    img = load_image(encode(Image.new("RGBA", (64, 64), (255, 0, 0, 0))))
    with pytest.raises(InputError, match="fully transparent"):
        to_cutout(img)


def test_busy_opaque_image_without_plain_background_is_rejected():
    with pytest.raises(InputError, match="no plain background"):
        to_cutout(Image.fromarray(noisy_rgb()))


def test_plain_colour_image_has_no_object():
    with pytest.raises(InputError, match="no object"):
        to_cutout(Image.new("RGB", (64, 64), (10, 200, 10)))


# ---- modes -> RGBA ----------------------------------------------------------------------------


def mode_cases() -> dict[str, Image.Image]:
    rgb = on_plain_background()
    gray = rgb.mean(-1).astype(np.uint8)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    return {
        "RGB": Image.fromarray(rgb),
        "L": Image.fromarray(gray),
        "LA": Image.fromarray(np.stack([gray, np.full_like(gray, 255)], -1), "LA"),
        "P": pal,
        "I;16": Image.fromarray(gray.astype(np.uint16) * 257),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
        "1": Image.fromarray(gray > 128),
    }


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "P", "I;16", "CMYK", "1"])
def test_modes_become_rgba_and_plain_background_is_keyed(mode):
    src = mode_cases()[mode]
    assert src.mode == mode
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    img = load_image(encode(src, fmt))
    assert img.mode == "RGBA" and img.size == (96, 96)
    cut = np.asarray(to_cutout(img, margin=0.0))
    # the 48x36 object is kept (plus a 2 px minimum margin), the background became transparent
    assert cut.shape[:2] == (48 + 4, 36 + 4)
    assert (cut[..., 3][:2] == 0).all() and (cut[..., 3][2:-2, 2:-2] == 255).all()


def test_16bit_gray_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    img = np.asarray(load_image(encode(Image.fromarray(ramp))))
    assert img[0, 0, 0] == 0 and img[-1, -1, 0] == 255 and 120 < img[32, 0, 0] < 136


def test_palette_transparency_is_kept():
    pal = Image.new("P", (64, 64), 0)
    pal.putpalette([0, 255, 0, 200, 0, 0] + [0] * 762)
    pal.paste(1, (16, 16, 48, 40))
    img = load_image(encode(pal, transparency=0))
    a = np.asarray(img)
    assert a[0, 0, 3] == 0 and tuple(a[20, 20]) == (200, 0, 0, 255)
    cut = np.asarray(to_cutout(img, margin=0.0))
    assert cut.shape[:2] == (24 + 4, 32 + 4)
    assert (cut[2:-2, 2:-2] == (200, 0, 0, 255)).all()


def test_exif_orientation_applied():
    img = Image.fromarray(np.zeros((40, 80, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6                      # rotate 90° clockwise on display
    out = load_image(encode(img, "JPEG", exif=exif))
    assert out.size == (40, 80)


def test_animated_image_uses_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = np.asarray(load_image(buf.getvalue()))
    assert tuple(out[5, 5, :3]) == (255, 0, 0)


# ---- cut-out ----------------------------------------------------------------------------------


def test_keying_keeps_interior_background_coloured_regions_and_feathers():
    rgb = on_plain_background(bg=(250, 250, 250))
    rgb[44:52, 40:56] = (250, 250, 250)          # background-coloured patch INSIDE the object: kept
    rgb[23, 30:66] = (245, 228, 228)             # anti-aliased edge row: 90 % background, 10 % red
    img = Image.fromarray(rgb)
    cut = np.asarray(to_cutout(img, margin=0.0))  # crop: rows 23..71 (+2 px), cols 30..65 (+2 px)
    alpha = cut[..., 3]
    assert (alpha[:2] == 0).all() and (alpha[:, :2] == 0).all()
    assert (alpha[2 + 45 - 23:2 + 51 - 23, 2 + 10:2 + 26] == 255).all()
    edge = alpha[2, 2:-2]
    assert (edge > 100).all() and (edge < 250).all(), "edge pixels should be partially transparent"
    # some of the background mixed into the edge colour is removed again (less white, more red)
    assert cut[2, 10, 1] < 225 and cut[2, 10, 1] < cut[2, 10, 0] - 15


def test_existing_alpha_is_kept_and_crop_has_margin(cutout):
    a = np.asarray(cutout)[..., 3]
    ys, xs = np.nonzero(a >= 8)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    out = np.asarray(to_cutout(cutout, margin=0.1))
    pad = round(0.1 * max(h, w))
    assert out.shape[:2] == (h + 2 * pad, w + 2 * pad)
    np.testing.assert_array_equal(out[pad:pad + h, pad:pad + w],
                                  np.asarray(cutout)[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


def test_load_cutout_on_real_images(need_images):
    for path in sorted(need_images.glob("*.webp"))[:3]:
        cut = load_cutout(path)
        a = np.asarray(cut)[..., 3]
        assert cut.mode == "RGBA" and (a[0] == 0).all() and (a[:, 0] == 0).all()
        assert (a >= 250).mean() > 0.1, "the object's alpha was kept"


@pytest.fixture
def need_images():
    from conftest import IMAGES, need_shared
    return need_shared(IMAGES)
