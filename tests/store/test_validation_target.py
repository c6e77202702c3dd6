"""The cloud-copy gate against a real copy on the embedded server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lepton_core.data.stage import migrate_dataset
from lepton_core.spec import load_spec
from lepton_core.state import store_dir
from lepton_core.store import EmbeddedStore, ObjectStore
from lepton_core.validation.gate import ValidationFailed
from lepton_core.validation.outputs import docs_dir, upload_docs
from lepton_core.validation.parity import column_stats_table, validate_target
from lepton_core.validation.profile import table_profile


@pytest.fixture
def copied(demo_data: Path, state_root: Path) -> Iterator[tuple]:
    """The demo's table and on-prem images copied to a fresh embedded server."""
    loaded = load_spec(demo_data)
    for name in ("request-log", "digits-onprem"):
        migrate_dataset(loaded, name, state_root)
    server = EmbeddedStore(store_dir(state_root))
    try:
        yield loaded, state_root, ObjectStore(server.settings())
    finally:
        server.down()


def failures(loaded, name: str, root: Path) -> dict[str, tuple[str, ...]]:
    with pytest.raises(ValidationFailed) as err:
        validate_target(loaded, name, root)
    return {c.expectation: c.examples for c in err.value.result.failures}


def test_a_faithful_copy_passes(copied) -> None:
    loaded, root, _ = copied
    result = validate_target(loaded, "digits-onprem", root)
    assert result.success and result.rows == {"copy": 1797} and len(result.checks) == 6


def test_truncated_altered_missing_and_extra_objects_are_named(copied) -> None:
    loaded, root, store = copied
    prefix = "digits-demo/datasets/digits-onprem"
    keys = sorted(o.key for o in store.list("lepton-demo", prefix + "/train/1/"))
    data = store.get_bytes("lepton-demo", keys[0])
    store.client.put_object(Bucket="lepton-demo", Key=keys[0], Body=data[: len(data) // 2])  # truncated
    other = store.get_bytes("lepton-demo", keys[1])
    store.client.put_object(Bucket="lepton-demo", Key=keys[1], Body=bytes(reversed(other)))  # altered, same size
    store.delete("lepton-demo", keys[2])  # lost
    store.put_bytes("lepton-demo", f"{prefix}/train/1/extra.png", b"not the source's")  # not in the copy
    got = failures(loaded, "digits-onprem", root)
    rel = [k[len(prefix) + 1:] for k in keys[:3]]
    extra = "train/1/extra.png"
    assert got["expect_column_values_to_be_in_set(column=size_as_verified)"] == (rel[0], rel[2], extra)
    assert got["expect_column_values_to_be_in_set(column=etag_as_verified)"] == (*rel[:3], extra)
    assert got["expect_column_values_to_be_in_set(column=on_target)"] == (rel[2],)
    assert got["expect_column_values_to_be_in_set(column=in_manifest)"] == (extra,)


def test_source_changed_since_the_copy(copied, demo_data: Path, tmp_path: Path) -> None:
    loaded, root, _ = copied
    moved = tmp_path / "demo"
    shutil.copytree(demo_data.parent / "data", moved / "data")
    (moved / "spec.yaml").write_text(demo_data.read_text())
    table = moved / "data/request-log.parquet"
    table.write_bytes(table.read_bytes() + b"\0")
    got = failures(load_spec(moved / "spec.yaml"), "request-log", root)
    assert got == {"expect_column_values_to_be_in_set(column=hash_matches_source)": ("request-log.parquet",)}


def test_no_copy_at_all(copied) -> None:
    loaded, root, _ = copied
    with pytest.raises(ValidationFailed, match=r"target validation of dataset 'digits-cloud' failed: manifest_exists on copy: "
                                               r"1 unexpected; e.g. s3://lepton-demo/digits-demo/datasets/digits-cloud/_lepton_manifest.json: no complete copy"):
        validate_target(loaded, "digits-cloud", root)


def test_cli_validate_target(copied, demo_data: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    loaded, _, store = copied  # the state_root fixture points LEPTON_HOME at this copy's server
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(demo_data), "--side", "target", "--dataset", "request-log"])
    assert ok.exit_code == 0 and ok.stdout.startswith("request-log: 7 expectations passed on copy (1 row), columns (32 rows)")
    key = "digits-demo/datasets/request-log/request-log.parquet"
    store.client.put_object(Bucket="lepton-demo", Key=key, Body=b"not the table")
    bad = runner.invoke(app, ["validate", str(demo_data), "--side", "target", "--dataset", "request-log"])
    assert bad.exit_code == 2
    assert bad.stderr == ("error: target validation of dataset 'request-log' failed: expect_column_values_to_be_in_set"
                          "(column=size_as_verified) on copy: 1 unexpected; e.g. request-log.parquet (and 1 more failed expectation)\n")


def test_a_table_copy_is_read_back_and_its_column_statistics_compared(copied, tmp_path: Path) -> None:
    loaded, root, _ = copied
    result = validate_target(loaded, "request-log", root, docs_dir(tmp_path, "target", "request-log"))
    assert result.success and result.rows == {"copy": 1, "columns": 32}  # rows, 6 numeric columns x 5 statistics, the nulls of client
    assert [c.table for c in result.checks].count("columns") == 1
    assert result.profile["rows"] == 5000 and result.profile["columns"]["client"]["unique"] == 4
    uri = upload_docs(loaded, root, tmp_path, "run-1")
    assert uri == "s3://lepton-demo/digits-demo/data-docs/run-1/"
    _, _, store = copied
    index = store.client.head_object(Bucket="lepton-demo", Key="digits-demo/data-docs/run-1/target-request-log/index.html")
    assert index["ContentType"] == "text/html"
    assert upload_docs(loaded, root, tmp_path / "nothing-here", "run-2") is None


def test_column_statistics_that_differ_are_named() -> None:
    import pandas as pd

    source = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]})
    copy = pd.DataFrame({"a": [1.0, 2.0, 3.5], "b": ["x", "y", None]})
    stats = column_stats_table(table_profile(source), table_profile(copy))
    differ = stats.loc[~stats["within_tolerance"], ["column", "statistic"]].values.tolist()
    assert differ == [["a", "mean"], ["a", "std"], ["a", "max"], ["b", "nulls"]]
    same = column_stats_table(table_profile(source), table_profile(source.copy()))
    assert bool(same["within_tolerance"].all())
