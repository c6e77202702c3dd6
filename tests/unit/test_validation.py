"""Validation gates: the demo passes; each crafted defect is caught and named with examples."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lepton_core.spec import load_spec
from lepton_core.validation.gate import ValidationFailed, validate_local


@pytest.fixture
def demo_copy(demo_data: Path, tmp_path: Path) -> Path:
    """A private copy of the demo (data and spec), for one test to damage."""
    dest = tmp_path / "demo"
    shutil.copytree(demo_data.parent / "data", dest / "data")
    shutil.copy(demo_data, dest / "spec.yaml")
    return dest


def fails(root: Path, dataset: str) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as err:
        validate_local(load_spec(root / "spec.yaml"), dataset)
    return err.value


def failed(err: ValidationFailed) -> dict[str, tuple[str, ...]]:
    return {f"{c.table}:{c.expectation}": c.examples for c in err.result.failures}


def test_demo_data_passes(demo_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    loaded = load_spec(demo_data)
    for name in ("digits-onprem", "digits-cloud", "request-log"):
        result = validate_local(loaded, name)
        assert result.success and len(result.checks) >= 5
    # the root logger at WARNING, as Prefect sets it: GX's own INFO lines (a temporary folder for
    # each ephemeral context, from a module that sets its logger to INFO) stay out of the flow's log
    assert logging.getLogger().getEffectiveLevel() == logging.WARNING
    assert [r.getMessage() for r in caplog.records if r.name.startswith("great_expectations")] == []
    assert validate_local(loaded, "digits-onprem").rows == {"images": 1797, "classes": 30}


def first_png(folder: Path) -> Path:
    return sorted(folder.glob("*.png"))[0]


def test_corrupt_png(demo_copy: Path) -> None:
    png = first_png(demo_copy / "data/digits-onprem/train/3")
    png.write_bytes(png.read_bytes()[:40])  # truncated
    rel = f"train/3/{png.name}"
    err = fails(demo_copy, "digits-onprem")
    assert failed(err)["images:expect_column_values_to_be_in_set(column=decodes)"] == (rel,)
    assert str(err).startswith("source validation of dataset 'digits-onprem' failed: expect_column_values_to_be_in_set(column=decodes) "
                               f"on images: 1 unexpected; e.g. {rel}")


def test_missing_class(demo_copy: Path) -> None:
    shutil.rmtree(demo_copy / "data/digits-onprem/val/7")
    err = fails(demo_copy, "digits-onprem")
    assert failed(err)["classes:expect_column_values_to_be_in_set(column=folder_exists)"] == ("val/7",)


def test_empty_class(demo_copy: Path) -> None:
    for png in (demo_copy / "data/digits-onprem/test/4").iterdir():
        png.unlink()
    err = fails(demo_copy, "digits-onprem")
    assert failed(err) == {"classes:expect_column_values_to_be_between(column=images)": ("test/4",)}


def test_unexpected_class(demo_copy: Path) -> None:
    extra = demo_copy / "data/digits-onprem/train/ten"
    extra.mkdir()
    shutil.copy(first_png(demo_copy / "data/digits-onprem/train/1"), extra / "x.png")
    err = fails(demo_copy, "digits-onprem")
    assert failed(err)["images:expect_column_values_to_be_in_set(column=class)"] == ("train/ten/x.png",)


def test_duplicate_image_under_two_classes(demo_copy: Path) -> None:
    original = first_png(demo_copy / "data/digits-onprem/train/1")
    shutil.copy(original, demo_copy / "data/digits-onprem/train/2/dup.png")
    err = fails(demo_copy, "digits-onprem")
    assert set(failed(err)["images:expect_column_values_to_be_between(column=classes_with_same_hash)"]) == \
        {f"train/1/{original.name}", "train/2/dup.png"}


def test_wrong_image_size(demo_copy: Path) -> None:
    from PIL import Image

    path = first_png(demo_copy / "data/digits-cloud/val/5")
    Image.open(path).resize((28, 28)).save(path)
    err = fails(demo_copy, "digits-cloud")
    assert failed(err)["images:expect_column_values_to_be_between(column=width)"] == (f"val/5/{path.name}",)


def edit_table(root: Path, change) -> None:
    path = root / "data/request-log.parquet"
    frame = pd.read_parquet(path)
    change(frame)
    frame.to_parquet(path, index=False)


def test_wrong_column_type(demo_copy: Path) -> None:
    edit_table(demo_copy, lambda f: f.__setitem__("latency_ms", f["latency_ms"].astype(str)))
    err = fails(demo_copy, "request-log")
    assert "table:expect_column_values_to_be_in_type_list(column=latency_ms)" in failed(err)


def test_time_zone_aware_times_are_times(demo_copy: Path) -> None:
    def change(f: pd.DataFrame) -> None:
        f["timestamp"] = f["timestamp"].dt.tz_localize("Europe/Paris", ambiguous="NaT", nonexistent="NaT").fillna(pd.Timestamp("2026-10-01", tz="Europe/Paris"))

    edit_table(demo_copy, change)
    assert validate_local(load_spec(demo_copy / "spec.yaml"), "request-log").success
    edit_table(demo_copy, lambda f: f.__setitem__("timestamp", f["timestamp"].astype(str)))
    assert "table:expect_column_values_to_be_in_type_list(column=timestamp)" in failed(fails(demo_copy, "request-log"))


def test_nulls(demo_copy: Path) -> None:
    def change(f: pd.DataFrame) -> None:
        f["confidence"] = f["confidence"].astype("float64")
        f.loc[[17, 4000], "confidence"] = None

    edit_table(demo_copy, change)
    err = fails(demo_copy, "request-log")
    assert failed(err) == {"table:expect_column_values_to_not_be_null(column=confidence)": ("row 17", "row 4000")}


def test_out_of_range_and_duplicate_key(demo_copy: Path) -> None:
    def change(f: pd.DataFrame) -> None:
        f.loc[9, "predicted_class"] = 12
        f.loc[3, "request_id"] = f.loc[2, "request_id"]

    edit_table(demo_copy, change)
    err = fails(demo_copy, "request-log")
    got = failed(err)
    assert got["table:expect_column_values_to_be_between(column=predicted_class)"] == ("row 9",)
    assert set(got["table:expect_column_values_to_be_unique(column=request_id)"]) == {"row 2", "row 3"}


def test_cli_validate(demo_copy: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(demo_copy / "spec.yaml"), "--dataset", "request-log"])
    assert ok.exit_code == 0 and ok.stdout.startswith("request-log: 23 expectations passed on table (5000 rows)")
    shutil.rmtree(demo_copy / "data/digits-onprem/train/0")
    bad = runner.invoke(app, ["validate", str(demo_copy / "spec.yaml")])
    assert bad.exit_code == 2
    assert bad.stderr == ("error: source validation of dataset 'digits-onprem' failed: expect_column_values_to_be_in_set(column=folder_exists) "
                          "on classes: 1 unexpected; e.g. train/0 (and 1 more failed expectation)\n")
    unknown = runner.invoke(app, ["validate", str(demo_copy / "spec.yaml"), "--dataset", "nope"])
    assert unknown.exit_code == 2 and "--dataset nope: no local dataset of that name" in unknown.stderr
