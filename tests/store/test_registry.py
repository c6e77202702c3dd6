"""The model registry on a real SeaweedFS server: versions, fetch, and atomic promotion."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from lepton_core.errors import UsageError
from lepton_core.registry import PromotionConflict, Registry
from lepton_core.store import ObjectStore, PreconditionFailed, StoreError


@pytest.fixture
def registry(store: ObjectStore) -> Registry:
    return Registry(store, store.bucket, "demo/registry")


def checkpoint(tmp_path: Path, name: str, payload: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(payload)
    return path


def test_a_version_round_trips_and_its_checkpoint_is_checked(registry: Registry, tmp_path: Path) -> None:
    v1 = registry.register("digits", "v1", checkpoint(tmp_path, "a.pt", b"weights-1"), {"created_at": "2026-01-01",
                                                                                            "metrics": {"x": 1}})
    registry.register("digits", "v2", checkpoint(tmp_path, "b.pt", b"weights-2"), {"created_at": "2026-01-02"})
    assert [v.version for v in registry.versions("digits")] == ["v1", "v2"]
    got = registry.get("digits", "v1")
    assert got.card["metrics"] == {"x": 1} and got.card["checkpoint"]["uri"] == f"s3://{registry.bucket}/demo/registry/digits/versions/v1/model.pt"
    assert got.uri == v1.uri == f"s3://{registry.bucket}/demo/registry/digits/versions/v1/"
    assert registry.fetch(got, tmp_path / "cache").read_bytes() == b"weights-1"
    # bytes altered on the server are refused, and nothing is left behind
    registry.store.put_bytes(registry.bucket, got.checkpoint_key, b"tampered")
    with pytest.raises(StoreError, match="do not match the card's SHA-256"):
        registry.fetch(got, tmp_path / "cache2")
    assert not (tmp_path / "cache2" / "digits" / "v1.pt").exists()
    with pytest.raises(UsageError, match=r"no version 'v9' of model 'digits' in the registry"):
        registry.get("digits", "v9")


def test_a_version_without_its_card_does_not_exist(registry: Registry) -> None:
    registry.store.put_bytes(registry.bucket, "demo/registry/digits/versions/half/model.pt", b"uploaded, card never written")
    assert registry.versions("digits") == []


def test_promotion_moves_a_stage_and_checks_what_it_expects(registry: Registry, tmp_path: Path) -> None:
    for v in ("v1", "v2"):
        registry.register("digits", v, checkpoint(tmp_path, f"{v}.pt", v.encode()), {})
    assert registry.stage("digits", "production") is None
    first = registry.promote("digits", "v1", "production", expected=None)
    assert first.previous is None and registry.stage("digits", "production").version == "v1"
    with pytest.raises(PromotionConflict, match="production holds v1, not no version"):
        registry.promote("digits", "v2", "production", expected=None)
    second = registry.promote("digits", "v2", "production", expected="v1", note="cutover")
    assert second.previous == "v1" and registry.stage("digits", "production").note == "cutover"
    with pytest.raises(UsageError, match="unknown stage 'staging'"):
        registry.promote("digits", "v2", "staging")
    with pytest.raises(UsageError, match="no version 'v3'"):
        registry.promote("digits", "v3", "candidate")


def test_a_stale_conditional_write_is_refused_by_the_server(store: ObjectStore) -> None:
    first = store.put_bytes(store.bucket, "k", b"1", if_absent=True)
    with pytest.raises(PreconditionFailed):
        store.put_bytes(store.bucket, "k", b"2", if_absent=True)
    store.put_bytes(store.bucket, "k", b"3", if_match=first.etag)
    with pytest.raises(PreconditionFailed):
        store.put_bytes(store.bucket, "k", b"4", if_match=first.etag)  # the ETag it was read with is gone
    assert store.get_bytes(store.bucket, "k") == b"3"


def test_concurrent_promotions_cannot_both_win_and_readers_never_see_half_a_pointer(registry: Registry, tmp_path: Path) -> None:
    versions = [f"v{i}" for i in range(8)]
    for v in versions:
        registry.register("digits", v, checkpoint(tmp_path, f"{v}.pt", v.encode()), {})
    registry.promote("digits", "v0", "production", expected=None)
    start = threading.Barrier(len(versions) - 1 + 2)
    outcomes: dict[str, str] = {}
    seen: list[str] = []
    stop = threading.Event()

    def promote(v: str) -> None:
        start.wait()
        try:
            registry.promote("digits", v, "production", expected="v0")
            outcomes[v] = "won"
        except PromotionConflict:
            outcomes[v] = "lost"

    def read() -> None:
        start.wait()
        while not stop.is_set():
            raw = registry.store.get_bytes(registry.bucket, "demo/registry/digits/stages/production.json")
            seen.append(json.loads(raw)["version"])  # always whole JSON naming a real version

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions[1:]]
    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    winners = [v for v, o in outcomes.items() if o == "won"]
    assert len(winners) == 1 and len(outcomes) == 7
    assert registry.stage("digits", "production").version == winners[0]
    assert set(seen) <= {"v0", winners[0]} and seen


def test_registry_list_shows_each_version_with_its_stages_in_columns(demo_full: Path, state_root: Path, tmp_path: Path) -> None:
    """`lepton registry list SPEC`: a header, one aligned row a version (oldest first), '-' where a
    version has no accuracy or stage; before anything is registered, one line that says so."""
    from typer.testing import CliRunner

    from flows.cli import app
    from lepton_core.spec import load_spec
    from lepton_core.state import store_dir
    from lepton_core.store import EmbeddedStore
    from lepton_core.store.target import open_store

    runner = CliRunner()
    try:
        target = load_spec(demo_full).spec.target
        registry = Registry.for_target(target, open_store(target, state_root, start=True))
        empty = runner.invoke(app, ["registry", "list", str(demo_full)])
        assert empty.exit_code == 0, empty.stderr
        assert empty.stdout == f"no version of digits-classifier in {registry.model_uri('digits-classifier')} yet (the adapt stage registers one)\n"
        registry.register("digits-classifier", "onprem-1", checkpoint(tmp_path, "a.pt", b"a"),
                          {"created_at": "2026-12-01T10:00:00+00:00", "kind": "on-prem"})
        registry.register("digits-classifier", "3f2a", checkpoint(tmp_path, "b.pt", b"b"),
                          {"created_at": "2026-12-02T11:30:00+00:00", "metrics": {"adapted": {"accuracy": 0.964}}})
        registry.promote("digits-classifier", "onprem-1", "production")
        registry.promote("digits-classifier", "3f2a", "candidate")
        listed = runner.invoke(app, ["registry", "list", str(demo_full)])
        assert listed.exit_code == 0
        assert listed.stdout.splitlines() == [
            "version   created              kind     target accuracy  stages",
            "onprem-1  2026-12-01T10:00:00  on-prem  -                production",
            "3f2a      2026-12-02T11:30:00  adapted  96.4%            candidate",
        ]
    finally:
        EmbeddedStore(store_dir(state_root)).down()
