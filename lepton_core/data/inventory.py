"""What a dataset is made of on local disk: every regular file, with its size and change time,
and its SHA-256 (from a cache keyed by path, size, change time and inode, so an unchanged file is
hashed once)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lepton_core.errors import UsageError
from lepton_core.gcpause import gc_paused

HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file of a dataset. ``rel`` is its path under the dataset root, with '/' separators;
    ``fspath`` the path to open (a string: a Path per file is most of the cost of listing a large
    folder, so ``path`` makes one only when asked)."""

    rel: str
    fspath: str
    size: int
    mtime_ns: int
    inode: int

    @property
    def path(self) -> Path:
        return Path(self.fspath)


@gc_paused()
def inventory(location: str | os.PathLike) -> list[SourceFile]:
    """Every regular file under a folder (or the one file), sorted by ``rel``. Symbolic links are
    followed; temporary files of our own atomic writes (``.*.part``) are left out; an unreadable
    file or folder, or a broken link, is an error."""
    root = _existing(location)
    if root.is_file():
        st = root.stat()
        _check_readable(root)
        return [SourceFile(root.name, str(root), st.st_size, st.st_mtime_ns, st.st_ino)]
    uid = os.geteuid() if hasattr(os, "geteuid") else -1
    files: list[SourceFile] = []
    for rel, entry in _walk(root):
        st = entry.stat()
        # os.access is a system call a file; a file its owner may read, or any file for root, needs none
        if not (uid == 0 or (st.st_uid == uid and st.st_mode & stat.S_IRUSR)):
            _check_readable(entry.path)
        files.append(SourceFile(rel, entry.path, st.st_size, st.st_mtime_ns, st.st_ino))
    files.sort(key=lambda f: f.rel)
    return files


@gc_paused()
def file_paths(location: str | os.PathLike) -> list[tuple[str, str]]:
    """``(rel, fspath)`` of the files ``inventory`` lists, in the same order, without asking the file
    system for each file's size, times and permissions (most of a listing's cost): for a caller that
    reads every file anyway, and so finds an unreadable one itself."""
    root = _existing(location)
    if root.is_file():
        return [(root.name, str(root))]
    paths = [(rel, entry.path) for rel, entry in _walk(root)]
    paths.sort()
    return paths


def _existing(location: str | os.PathLike) -> Path:
    root = Path(location)
    if not root.exists():
        raise UsageError(f"{root}: source does not exist")
    return root


def _walk(root: Path) -> Iterator[tuple[str, os.DirEntry]]:
    """``(rel, entry)`` for every regular file under the folder ``root``, in no order."""
    stack = [str(root)]
    cut = len(os.path.join(str(root), ""))  # scandir paths start with the root and a separator
    slash = os.sep != "/"
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except PermissionError:
            raise UsageError(f"{folder}: folder is not readable") from None
        for entry in entries:
            name = entry.name
            if name[0] == "." and name.endswith(".part"):
                continue
            if entry.is_dir():  # both follow links; without a link, the folder's own listing answers
                stack.append(entry.path)
            elif entry.is_file():
                path = entry.path
                yield (path[cut:].replace(os.sep, "/") if slash else path[cut:]), entry
            elif entry.is_symlink() and not os.path.exists(entry.path):
                raise UsageError(f"{entry.path}: broken symbolic link")


def _check_readable(path: str | os.PathLike) -> None:
    if not os.access(path, os.R_OK):
        raise UsageError(f"{path}: file is not readable")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
    except PermissionError:
        raise UsageError(f"{path}: file is not readable") from None
    return h.hexdigest()


class HashCache:
    """SHA-256 of local files, remembered across runs in a small SQLite file."""

    def __init__(self, db: Path) -> None:
        db.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(db, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, sha256 TEXT)"
        )

    def close(self) -> None:
        self._conn.close()

    @gc_paused()
    def hashes(self, files: list[SourceFile], threads: int = 4) -> dict[str, str]:
        """``{rel: sha256}`` for ``files``; only new or changed files are read."""
        known: dict[str, str] = {}
        if not files:
            return known
        # only the rows between these files' paths (the cache may hold many other datasets)
        paths = [f.fspath for f in files]
        rows = self._conn.execute("SELECT path, size, mtime_ns, inode, sha256 FROM hashes WHERE path BETWEEN ? AND ?",
                                  (min(paths), max(paths))).fetchall()
        cached = {r[0]: r[1:] for r in rows}
        todo = []
        for f in files:
            hit = cached.get(f.fspath)
            if hit and hit[:3] == (f.size, f.mtime_ns, f.inode):
                known[f.rel] = hit[3]
            else:
                todo.append(f)
        if todo:
            with ThreadPoolExecutor(max_workers=threads) as pool:  # hashlib releases the GIL
                digests = list(pool.map(lambda f: sha256_file(f.fspath), todo))
            with self._conn:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)",
                    [(f.fspath, f.size, f.mtime_ns, f.inode, d) for f, d in zip(todo, digests, strict=True)],
                )
            known.update({f.rel: d for f, d in zip(todo, digests, strict=True)})
        return known
