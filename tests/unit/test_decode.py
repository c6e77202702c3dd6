"""Describing image files: libspng's quick path for common PNGs says exactly what Pillow says."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from lepton_core.errors import UsageError
from lepton_core.validation import decode


def png(array: np.ndarray, mode: str, **save: object) -> bytes:
    out = BytesIO()
    Image.fromarray(array, mode=mode).save(out, format="PNG", **save)
    return out.getvalue()


def pillow_row(data: bytes) -> tuple[bool, int, int, str, np.ndarray]:
    """What Pillow alone says of a file: decodes, width, height, mode and its grey histogram."""
    try:
        with Image.open(BytesIO(data)) as img:
            img.load()
            grey = np.asarray(img.convert("L").histogram()[:256], dtype=np.int64)
            return True, img.width, img.height, img.mode, grey
    except Exception:
        return False, -1, -1, "", np.zeros(256, dtype=np.int64)


def with_chunk(data: bytes, kind: bytes, body: bytes, *, crc_ok: bool = True) -> bytes:
    """``data`` with one more chunk just before IEND (the last 12 bytes)."""
    crc = zlib.crc32(kind + body) ^ (0 if crc_ok else 1)
    return data[:-12] + struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc) + data[-12:]


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]


@pytest.fixture
def files() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    grey, rgb, rgba = (rng.integers(0, 256, size=s, dtype=np.uint8) for s in ((20, 30), (17, 13, 3), (9, 11, 4)))
    text = PngImagePlugin.PngInfo()
    text.add_text("comment", "x" * 40)
    quick = {
        "grey": png(grey, "L"), "grey-interlaced": png(grey, "L", interlace=1), "grey-text": png(grey, "L", pnginfo=text),
        "rgb": png(rgb, "RGB"), "rgb-optimised": png(rgb, "RGB", optimize=True), "rgb-transparent": png(rgb, "RGB", transparency=(1, 2, 3)),
        "rgba": png(rgba, "RGBA"), "rgba-interlaced": png(rgba, "RGBA", interlace=1),
    }
    others = {  # kinds the quick path leaves to Pillow
        "grey-alpha": png(rng.integers(0, 256, size=(8, 8, 2), dtype=np.uint8), "LA"),
        "palette": _palette(grey),
        "grey-16": _grey16(rng),
        "jpeg-named-png": _jpeg(rgb),
    }
    grey_png = quick["grey"]
    damaged = {
        "truncated-header": grey_png[:30], "truncated-data": grey_png[:len(grey_png) // 2], "no-end": grey_png[:-12],
        "flipped-size": flip(grey_png, 19), "flipped-data": flip(grey_png, 45), "flipped-crc": flip(grey_png, 30),
        "bad-crc-after-data": with_chunk(grey_png, b"tEXt", b"k\x00v", crc_ok=False),
        "extra-chunk": with_chunk(grey_png, b"tEXt", b"k\x00v"),
        "not-an-image": b"hello",
    }
    return {**quick, **others, **damaged}


def _palette(grey: np.ndarray) -> bytes:
    out = BytesIO()
    Image.fromarray(grey, mode="L").convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(out, format="PNG")
    return out.getvalue()


def _grey16(rng: np.random.Generator) -> bytes:
    out = BytesIO()
    Image.fromarray(rng.integers(0, 65536, size=(6, 7), dtype=np.uint16)).save(out, format="PNG")
    return out.getvalue()


def _jpeg(rgb: np.ndarray) -> bytes:
    out = BytesIO()
    Image.fromarray(rgb, mode="RGB").save(out, format="JPEG")
    return out.getvalue()


def test_every_file_is_described_as_pillow_alone_describes_it(files: dict[str, bytes], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    quick_reads: list[int] = []
    spng = decode._spng()
    monkeypatch.setattr(decode, "_spng", lambda: lambda data: (quick_reads.append(len(data)), spng(data))[1])
    items = []
    for name, data in files.items():
        (tmp_path / name).mkdir()
        path = tmp_path / name / f"{name}.png"
        path.write_bytes(data)
        items.append((str(path), name))  # one class per file: each histogram is that file's
    columns, histograms = decode.describe_all(items)
    for i, (name, data) in enumerate(files.items()):
        ok, width, height, mode, grey = pillow_row(data)
        row = (columns["decodes"][i], columns["width"][i], columns["height"][i], columns["mode"][i])
        assert row == (ok, width, height, mode), name
        assert (histograms.get(name, np.zeros(256, dtype=np.int64)) == grey).all(), name
        assert columns["bytes"][i] == len(data) and bool(columns["error"][i]) == (not ok), name
    # the quick path read the eight common PNGs and the one whose extra chunk is intact, nothing else
    assert len(quick_reads) == 9


def test_a_corrupt_chunk_is_never_read_by_the_quick_path(files: dict[str, bytes]) -> None:
    for name in ("flipped-size", "flipped-data", "flipped-crc", "bad-crc-after-data", "no-end", "truncated-data"):
        assert decode._fast_png(files[name]) is None, name
    assert decode._fast_png(files["grey"])[:3] == (30, 20, "L")


def test_grey_levels_are_pillows_own() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb, mode="RGB").convert("L"))
    assert (decode.grey_levels(rgb.reshape(-1, 3)) == expected.reshape(-1)).all()


def test_a_file_that_cannot_be_read_is_one_clear_error_here_and_in_a_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "a.png"
    good.write_bytes(png(np.zeros((4, 4), dtype=np.uint8), "L"))
    items = [(str(good), "c"), (str(tmp_path / "gone.png"), "c")]
    with pytest.raises(UsageError, match=r"gone\.png: cannot read the file \(No such file or directory\)"):
        decode.describe_all(items)
    monkeypatch.setattr(decode, "PROCESS_MIN_FILES", 0)
    with pytest.raises(UsageError, match=r"gone\.png: cannot read the file"):
        decode.describe_parallel(items * 2, workers=2)
