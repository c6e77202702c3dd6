"""Atomic file writes: write to a temporary sibling, then rename, so a reader (or a crash) never
sees a half-written file. Files get the usual permissions (0666 less the umask) unless a mode is
given, e.g. 0600 for secrets."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def default_mode(directory: bool = False) -> int:
    """0666 (0777 for folders) less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error it becomes ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        os.chmod(tmp, default_mode() if mode is None else mode)
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> Path:
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def write_figure_png(fig, path: str | os.PathLike) -> Path:
    """A matplotlib figure, laid out tight, written atomically to ``path`` as PNG."""
    import io

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(Path(path), buffer.getvalue())


def writable_dir(path: str | os.PathLike, label: str) -> Path:
    """``path`` as a folder that files can be written into: made, with its parents, when missing.
    A UsageError that starts with ``label`` and the path when it cannot be (a file in the way, a
    read-only or missing mount, no permission), so that a command refuses a bad destination
    before its work rather than after it."""
    from lepton_core.errors import UsageError

    path = Path(path)
    blocking = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise UsageError(f"{label} {path}: " + ("a file, not a folder" if blocking == path else f"{blocking} is a file, not a folder"))
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".lepton-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{label} {path}: cannot write there ({exc.strerror or exc})") from None
    return path
