"""The local inventory and the hash cache behind migrations and the validation gates."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lepton_core.data import inventory as inv
from lepton_core.data.inventory import HashCache, inventory
from lepton_core.errors import UsageError


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_inventory_lists_regular_files_sorted_with_their_paths(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ds", {"b/2.png": b"22", "a/ü ñ.png": b"1", "a/.tmp.part": b"partial", "top.txt": b""})
    (root / "b/link.png").symlink_to(root / "b/2.png")
    files = inventory(root)
    assert [f.rel for f in files] == ["a/ü ñ.png", "b/2.png", "b/link.png", "top.txt"]  # our .part files left out
    assert all(f.path == root / f.rel and f.fspath == str(root / f.rel) for f in files)
    assert [f.size for f in files] == [1, 2, 2, 0]
    one = inventory(root / "top.txt")
    assert [(f.rel, f.fspath) for f in one] == [("top.txt", str(root / "top.txt"))]
    with pytest.raises(UsageError, match="does not exist"):
        inventory(tmp_path / "nowhere")


def test_the_hash_cache_hashes_new_and_changed_files_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _tree(tmp_path / "a", {"x": b"one", "y": b"two"})
    b = _tree(tmp_path / "b", {"x": b"three"})
    cache = HashCache(tmp_path / "hashes.sqlite")
    try:
        assert cache.hashes(inventory(a)) == {"x": hashlib.sha256(b"one").hexdigest(), "y": hashlib.sha256(b"two").hexdigest()}
        assert cache.hashes(inventory(b)) == {"x": hashlib.sha256(b"three").hexdigest()}  # another dataset, same cache
        read: list[str] = []
        real = inv.sha256_file
        monkeypatch.setattr(inv, "sha256_file", lambda p: read.append(os.path.basename(os.path.dirname(p))) or real(p))
        (a / "y").write_bytes(b"changed")
        os.utime(a / "y", ns=(1, 1))  # another size and change time: read again
        assert cache.hashes(inventory(a))["y"] == hashlib.sha256(b"changed").hexdigest()
        assert cache.hashes(inventory(b))["x"] == hashlib.sha256(b"three").hexdigest()
        assert read == ["a"]  # only the changed file was read again
        assert cache.hashes([]) == {}
    finally:
        cache.close()
