"""The bundled demo: deterministic, complete, a real domain shift, written all-or-nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from lepton_core.demo.sample import SOURCE, TABLE, TARGET, build_sample
from lepton_core.errors import UsageError
from lepton_core.spec import load_spec


def tree_digest(root: Path) -> dict[str, str]:
    """Hashes of the files the demo writes (other tests add spec variants beside them)."""
    files = [root / "spec.yaml", *sorted((root / "data").rglob("*"))]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(demo_data: Path, tmp_path: Path) -> None:
    again = build_sample(tmp_path / "again", train_model=False)
    assert tree_digest(again.parent) == tree_digest(demo_data.parent)
    other = build_sample(tmp_path / "other", seed=1, train_model=False)
    a, b = tree_digest(demo_data.parent), tree_digest(other.parent)
    assert a.keys() != b.keys() or a != b


def test_image_folders_have_every_digit_in_every_split(demo_data: Path) -> None:
    root = demo_data.parent / "data"
    for domain in (SOURCE, TARGET):
        counts = {split: {c: len(list((root / domain / split / c).glob("*.png"))) for c in map(str, range(10))}
                  for split in ("train", "val", "test")}
        assert sum(sum(c.values()) for c in counts.values()) == 1797
        assert sum(counts["train"].values()) == 1078
        assert all(n > 0 for split in counts.values() for n in split.values())
    img = Image.open(root / SOURCE / "train" / "0" / "0000.png")
    assert (img.size, img.mode) == ((32, 32), "L")
    # the same digit, in the same split and class, in both domains
    assert sorted(p.relative_to(root / SOURCE) for p in (root / SOURCE).rglob("*.png")) == \
           sorted(p.relative_to(root / TARGET) for p in (root / TARGET).rglob("*.png"))


def test_target_domain_is_shifted(demo_data: Path) -> None:
    import numpy as np

    root = demo_data.parent / "data"
    src = np.stack([np.asarray(Image.open(p), dtype=float) for p in sorted((root / SOURCE / "test").rglob("*.png"))])
    tgt = np.stack([np.asarray(Image.open(p), dtype=float) for p in sorted((root / TARGET / "test").rglob("*.png"))])
    assert src.mean() < 80 < tgt.mean()  # dark background on-prem, bright background in the cloud
    # the cloud's images are noisy where the source's are (almost) flat background
    assert tgt[:, :4, :4].std() > 4 * src[:, :4, :4].std()


def test_table_matches_its_spec(demo_data: Path) -> None:
    spec = load_spec(demo_data).spec
    table = pd.read_parquet(demo_data.parent / "data" / f"{TABLE}.parquet")
    columns = spec.dataset(TABLE).columns
    assert list(table.columns) == [c.name for c in columns]
    assert table["request_id"].is_unique and len(table) == 5000
    assert table["timestamp"].is_monotonic_increasing
    for c in columns:
        assert table[c.name].notna().all()
        if c.min is not None:
            assert table[c.name].min() >= c.min
        if c.max is not None:
            assert table[c.name].max() <= c.max
        if c.values is not None:
            assert set(table[c.name].unique()) <= set(c.values)


def test_services_have_a_realistic_dependency_graph(demo_data: Path) -> None:
    services = load_spec(demo_data).spec.services
    assert 10 <= len(services) <= 14
    assert sum(1 for s in services if s.depends_on) >= 8
    assert sum(s.gpu for s in services) >= 1
    owners = {d for s in services for d in s.datasets}
    assert owners == {SOURCE, TARGET, TABLE}


def test_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="folder exists and is not empty"):
        build_sample(tmp_path / "busy", train_model=False)
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_interrupted_build_leaves_nothing(tmp_path: Path) -> None:
    def stop(msg: str) -> None:
        if msg.startswith("writing the request-log"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_sample(tmp_path / "demo", train_model=False, progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_source_model_learns_the_source_not_the_target(demo_full: Path) -> None:
    from lepton_core.transfer.checkpoint import load_checkpoint

    spec = load_spec(demo_full).spec
    state, meta = load_checkpoint(demo_full.parent / spec.model.checkpoint)
    assert (meta.architecture, meta.classes, meta.input_size) == ("resnet18", tuple(spec.model.classes), 32)
    assert meta.metrics["source_test_accuracy"] >= 0.9  # two epochs in the test fixture; four by default
    assert meta.metrics["target_test_accuracy"] <= 0.5  # the domain shift is real
    assert "fc.weight" in state and tuple(state["fc.weight"].shape) == (10, 512)
