"""Reading, hashing and decoding image files for the manifest, in this process or in workers.

Pillow spends about 30 us of Python on opening and loading even a 1 KB PNG, more than its
decoding takes. The PNGs most datasets hold (8-bit grey, RGB or RGBA) are therefore read by
libspng (pyspng: about 6 us), after their chunks' checksums are checked here (libspng skips them);
every other file, and any PNG that this path declines or cannot decode, goes to Pillow as before,
so a file decodes exactly when Pillow can read it and its row says what Pillow would.

Threads only fight over the GIL, so a large folder is split between worker processes, one per
core. The workers are plain ``python -m lepton_core.validation.decode`` subprocesses fed pickled
work on stdin, not a multiprocessing pool: a pool's children re-run the caller's ``__main__`` (a
user's unguarded flow script would run again inside them), and forking a process whose threads
hold locks can hang. This module imports only numpy, pyspng and Pillow, so a worker starts in a
fraction of a second.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import struct
import subprocess
import sys
import zlib
from io import BytesIO

import numpy as np

from lepton_core.errors import UsageError
from lepton_core.gcpause import gc_paused

PROCESS_MIN_FILES = 4096  # from this many files on, decode in worker processes


@functools.cache
def _formats() -> dict[str, str]:
    """Pillow's format for each file suffix it knows ('.png' -> 'PNG')."""
    from PIL import Image

    Image.init()
    return dict(Image.registered_extensions())


def _open_image(data: bytes, path: str):
    """PIL's image for ``data``: tried first as the format its suffix names (probing every format
    costs more than decoding a small image), then as any format."""
    from PIL import Image

    fmt = _formats().get(os.path.splitext(path)[1].lower())
    if fmt is not None:
        try:
            return Image.open(BytesIO(data), formats=[fmt])
        except Exception:  # not what its name says: let PIL find out what it is
            pass
    return Image.open(BytesIO(data))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST_PNG_MODES = {(8, 0): "L", (8, 2): "RGB", (8, 6): "RGBA"}  # (bit depth, colour type) -> Pillow's mode
FAST_PNG_MAX_PIXELS = 1 << 24  # larger images go to Pillow, whose decompression-bomb check they need


@functools.cache
def _spng():
    import pyspng

    return pyspng.load


def _chunks_intact(data: bytes) -> bool:
    """Every chunk of a PNG, up to IEND, is whole and has the CRC it declares."""
    pos, end_of_file, crc32 = 8, len(data), zlib.crc32
    while pos + 12 <= end_of_file:
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > end_of_file or crc32(data[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return False
        if kind == b"IEND":
            return True
        pos = end
    return False


def _fast_png(data: bytes) -> tuple[int, int, str, bytes, int] | None:
    """Width, height, Pillow's mode, the pixels and their channels (1, 3 or 4) of an 8-bit grey,
    RGB or RGBA PNG, read by libspng; None for any other file, or one it cannot read cleanly (which
    Pillow then reads, or fails on, with its own message)."""
    if len(data) < 33 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    mode = FAST_PNG_MODES.get((depth, colour))
    if mode is None or not 0 < width * height <= FAST_PNG_MAX_PIXELS or not _chunks_intact(data):
        return None
    try:
        pixels = _spng()(data)
    except Exception:  # pyspng raises RuntimeError for what libspng refuses; Pillow gives the verdict
        return None
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if pixels.shape[:2] != (height, width) or channels not in (1, 3, 4):
        return None
    return width, height, mode, pixels.tobytes(), channels


COLUMNS = ("bytes", "sha256", "decodes", "width", "height", "mode", "error")
HIST_FLUSH_BYTES = 1 << 22  # a class's pending grey pixels are counted (np.bincount) every 4 MiB


def _read(path: str) -> bytes:
    """The whole file (os-level calls: Python's buffered file object costs more than a small file's read)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def grey_levels(pixels: np.ndarray) -> np.ndarray:
    """Pillow's greyscale ("L") of (n, 3) or (n, 4) RGB(A) bytes: ITU-R 601-2 luma in Pillow's own
    fixed-point arithmetic (Convert.c), so the levels are the ones ``convert("L")`` gives."""
    rgb = pixels[:, :3].astype(np.uint32)
    return ((rgb[:, 0] * 19595 + rgb[:, 1] * 38470 + rgb[:, 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


class _Histograms:
    """Per-class 256-bin histograms of grey pixels. Pixels are gathered as bytes and counted in bulk
    (colour ones made grey in bulk too): a histogram per image, made into an array and added, costs
    more than decoding a small image."""

    def __init__(self) -> None:
        self.counts: dict[str, np.ndarray] = {}
        self._pending: dict[tuple[str, int], bytearray] = {}

    def add(self, cls: str, pixels: bytes, channels: int = 1) -> None:
        """Add an image's pixels: grey levels (``channels`` 1), or RGB or RGBA bytes (3 or 4)."""
        key = (cls, channels)
        buf = self._pending.get(key)
        if buf is None:
            buf = self._pending[key] = bytearray()
        buf += pixels
        if len(buf) >= HIST_FLUSH_BYTES:
            self._flush(key)

    def _flush(self, key: tuple[str, int]) -> None:
        cls, channels = key
        levels = np.frombuffer(self._pending.pop(key), dtype=np.uint8)
        if channels > 1:
            levels = grey_levels(levels.reshape(-1, channels))
        hist = np.bincount(levels, minlength=256).astype(np.int64)
        self.counts[cls] = self.counts[cls] + hist if cls in self.counts else hist

    def result(self) -> dict[str, np.ndarray]:
        for key in list(self._pending):
            self._flush(key)
        return self.counts


@gc_paused()
def describe_all(items: list[tuple[str, str]]) -> tuple[dict[str, list], dict[str, np.ndarray]]:
    """Describe (path, class) pairs: the manifest's columns (``COLUMNS``, one entry per item, in
    order) and the greyscale pixel histograms summed per class, over the files that decode."""
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    size, sha, decodes, width, height, mode, error = (columns[name].append for name in COLUMNS)
    histograms = _Histograms()
    sha256 = hashlib.sha256
    for path, cls in items:
        try:
            data = _read(path)
        except OSError as exc:  # unreadable, or gone since the folder was listed: an error, not a row
            raise UsageError(f"{path}: cannot read the file ({exc.strerror or type(exc).__name__})") from None
        size(len(data))
        sha(sha256(data).hexdigest())
        fast = _fast_png(data)
        if fast is not None:
            w, h, m, pixels, channels = fast
            histograms.add(cls, pixels, channels)
            decodes(True), width(w), height(h), mode(m), error("")
            continue
        failed = ""
        try:
            with _open_image(data, path) as img:
                img.load()  # decode every pixel: a truncated file fails here, not at open
                grey = img if img.mode == "L" else img.convert("L")
                pixels = grey.tobytes()
                w, h, m = img.width, img.height, img.mode
        except Exception as exc:  # PIL raises many types for bad files; each is a failed decode
            failed = f"{type(exc).__name__}: {exc}"[:200]
        if failed:
            decodes(False), width(-1), height(-1), mode(""), error(failed)
        else:
            histograms.add(cls, pixels)
            decodes(True), width(w), height(h), mode(m), error("")
    return columns, histograms.result()


def describe_parallel(items: list[tuple[str, str]], workers: int | None = None) -> tuple[dict[str, list], dict[str, np.ndarray]]:
    """``describe_all`` over one worker process per core for many files, in this process for few."""
    workers = workers or os.cpu_count() or 1
    if len(items) < PROCESS_MIN_FILES or workers < 2:
        return describe_all(items)
    size = -(-len(items) // workers)
    parts = [items[i:i + size] for i in range(0, len(items), size)]
    procs = [subprocess.Popen([sys.executable, "-m", "lepton_core.validation.decode"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE) for _ in parts]
    try:
        for proc, part in zip(procs, parts, strict=True):
            proc.stdin.write(pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL))
            proc.stdin.close()
        columns: dict[str, list] = {name: [] for name in COLUMNS}
        histograms: dict[str, np.ndarray] = {}
        for proc in procs:
            out = proc.stdout.read()
            if proc.wait() != 0:
                raise RuntimeError(f"an image-decoding worker exited with status {proc.returncode}")
            described = pickle.loads(out)
            if isinstance(described, str):  # the worker's one-line error (a file it could not read)
                raise UsageError(described)
            part_columns, part_histograms = described
            for name in COLUMNS:
                columns[name].extend(part_columns[name])
            for cls, hist in part_histograms.items():
                histograms[cls] = histograms[cls] + hist if cls in histograms else hist
        return columns, histograms
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _worker() -> None:
    items = pickle.load(sys.stdin.buffer)
    try:
        described: object = describe_all(items)
    except UsageError as exc:
        described = str(exc)
    sys.stdout.buffer.write(pickle.dumps(described, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    _worker()
