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


def test_file_paths_lists_what_inventory_lists_without_a_stat_a_file(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ds", {"b/2.png": b"22", "a/x/3.png": b"3", "a/.tmp.part": b"partial", "top.txt": b""})
    (root / "b/link.png").symlink_to(root / "b/2.png")
    (root / "linked").symlink_to(root / "a", target_is_directory=True)
    expected = [(f.rel, f.fspath) for f in inventory(root)]
    assert inv.file_paths(root) == expected
    assert [rel for rel, _ in expected] == ["a/x/3.png", "b/2.png", "b/link.png", "linked/x/3.png", "top.txt"]
    assert inv.file_paths(root / "top.txt") == [("top.txt", str(root / "top.txt"))]
    (root / "b/dangling.png").symlink_to(root / "b/nothing.png")
    for listing in (inventory, inv.file_paths):
        with pytest.raises(UsageError, match=r"b/dangling\.png: broken symbolic link"):
            listing(root)


def test_readability_is_asked_only_where_the_mode_does_not_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path / "ds", {"a": b"1", "b": b"2"})
    asked: list[str] = []
    monkeypatch.setattr(inv.os, "access", lambda path, mode: asked.append(os.path.basename(path)) or os.path.basename(path) != "b")
    monkeypatch.setattr(inv.os, "geteuid", lambda: 0)  # root reads every file
    assert len(inventory(root)) == 2 and asked == []
    monkeypatch.setattr(inv.os, "geteuid", lambda: (root / "a").stat().st_uid)  # the owner, with its read bit
    assert len(inventory(root)) == 2 and asked == []
    monkeypatch.setattr(inv.os, "geteuid", lambda: (root / "a").stat().st_uid + 1)  # someone else: the system decides
    with pytest.raises(UsageError, match=r"ds/b: file is not readable"):
        inventory(root)
    assert "b" in asked
    asked.clear()
    (root / "b").unlink()
    assert len(inventory(root)) == 1 and asked == ["a"]


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
