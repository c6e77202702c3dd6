"""Reading, hashing and decoding image files for the manifest, in this process or in workers.

A small image costs about 100 us of Python to describe, and threads only fight over the GIL, so a
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


def describe(path: str) -> tuple[dict, np.ndarray | None]:
    """One file's manifest row, and its 256-bin greyscale histogram when it decodes."""
    with open(path, "rb") as f:
        data = f.read()
    row = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "decodes": False,
           "width": -1, "height": -1, "mode": "", "error": ""}
    hist = None
    try:
        with _open_image(data, path) as img:
            img.load()  # decode every pixel: a truncated file fails here, not at open
            row.update(decodes=True, width=img.width, height=img.height, mode=img.mode)
            grey = img if img.mode == "L" else img.convert("L")
            hist = np.asarray(grey.histogram(), dtype=np.int64)
    except Exception as exc:  # PIL raises many types for bad files; each is a failed decode
        row["error"] = f"{type(exc).__name__}: {exc}"[:200]
    return row, hist


def describe_all(items: list[tuple[str, str]]) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Describe (path, class) pairs; the rows in order, and the pixel histograms summed per class."""
    rows, histograms = [], {}
    for path, cls in items:
        row, hist = describe(path)
        rows.append(row)
        if hist is not None:
            histograms[cls] = histograms[cls] + hist if cls in histograms else hist
    return rows, histograms


def describe_parallel(items: list[tuple[str, str]], workers: int | None = None) -> tuple[list[dict], dict[str, np.ndarray]]:
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
        rows: list[dict] = []
        histograms: dict[str, np.ndarray] = {}
        for proc in procs:
            out = proc.stdout.read()
            if proc.wait() != 0:
                raise RuntimeError(f"an image-decoding worker exited with status {proc.returncode}")
            part_rows, part_histograms = pickle.loads(out)
            rows.extend(part_rows)
            for cls, hist in part_histograms.items():
                histograms[cls] = histograms[cls] + hist if cls in histograms else hist
        return rows, histograms
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
