"""Reading, hashing and decoding image files for the manifest, in this process or in workers.

A small image costs about 40 us of Python to describe, and threads only fight over the GIL, so a
large folder is split between worker processes, one per core. The workers are plain
``python -m lepton_core.validation.decode`` subprocesses fed pickled work on stdin, not a
multiprocessing pool: a pool's children re-run the caller's ``__main__`` (a user's unguarded flow
script would run again inside them), and forking a process whose threads hold locks can hang.
This module imports only numpy and Pillow, so a worker starts in a fraction of a second.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import subprocess
import sys
from io import BytesIO

import numpy as np

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


class _Histograms:
    """Per-class 256-bin histograms of grey pixels. Pixels are gathered as bytes and counted in bulk:
    a histogram per image, made into an array and added, costs more than decoding a small image."""

    def __init__(self) -> None:
        self.counts: dict[str, np.ndarray] = {}
        self._pending: dict[str, bytearray] = {}

    def add(self, cls: str, grey: bytes) -> None:
        buf = self._pending.get(cls)
        if buf is None:
            buf = self._pending[cls] = bytearray()
        buf += grey
        if len(buf) >= HIST_FLUSH_BYTES:
            self._flush(cls)

    def _flush(self, cls: str) -> None:
        buf = self._pending.pop(cls)
        hist = np.bincount(np.frombuffer(buf, dtype=np.uint8), minlength=256).astype(np.int64)
        self.counts[cls] = self.counts[cls] + hist if cls in self.counts else hist

    def result(self) -> dict[str, np.ndarray]:
        for cls in list(self._pending):
            self._flush(cls)
        return self.counts


def describe_all(items: list[tuple[str, str]]) -> tuple[dict[str, list], dict[str, np.ndarray]]:
    """Describe (path, class) pairs: the manifest's columns (``COLUMNS``, one entry per item, in
    order) and the greyscale pixel histograms summed per class, over the files that decode."""
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    size, sha, decodes, width, height, mode, error = (columns[name].append for name in COLUMNS)
    histograms = _Histograms()
    sha256 = hashlib.sha256
    for path, cls in items:
        data = _read(path)  # the inventory found it readable; one that vanished since is an error, not a row
        size(len(data))
        sha(sha256(data).hexdigest())
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
            part_columns, part_histograms = pickle.loads(out)
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
    sys.stdout.buffer.write(pickle.dumps(describe_all(items), protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    _worker()
