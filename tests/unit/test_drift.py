"""Profiles, the drift report and its gate, Data Docs of a gate."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from lepton_core.spec import SpecError, load_spec
from lepton_core.spec.models import DatasetSpec
from lepton_core.validation.drift import drift_gate, drift_report, ks_from_quantiles, total_variation
from lepton_core.validation.gate import ValidationFailed, validate_local
from lepton_core.validation.manifest import scan_images
from lepton_core.validation.profile import QUANTILES, image_profile, table_profile
from lepton_core.validation.report import drift_markdown, gate_markdown


def write_images(root: Path, levels: dict[str, list[int]]) -> DatasetSpec:
    """One flat ImageFolder: for each class, one 4x4 greyscale image per level (every pixel that level)."""
    for cls, values in levels.items():
        (root / cls).mkdir(parents=True)
        for i, v in enumerate(values):
            Image.fromarray(np.full((4, 4), v, dtype=np.uint8), mode="L").save(root / cls / f"{i}.png")
    return DatasetSpec(name="d", location=str(root), kind="images", splits=(), classes=tuple(levels))


def test_image_profile_counts_and_pixel_statistics(tmp_path: Path) -> None:
    dataset = write_images(tmp_path / "imgs", {"dark": [0, 0, 10], "light": [200, 255]})
    scan = scan_images(tmp_path / "imgs", dataset)
    profile = image_profile(scan.manifest, scan.histograms)
    dark, light = profile["classes"]["dark"], profile["classes"]["light"]
    assert (dark["images"], light["images"], profile["rows"]) == (3, 2, 5)
    assert dark["mean"] == pytest.approx(10 / 3, abs=1e-3)
    assert light["mean"] == pytest.approx(227.5) and light["std"] == pytest.approx(27.5)
    assert dark["histogram"][:2] == pytest.approx([2 / 3, 1 / 3])  # 32 bins of 8 levels: 0 in bin 0, 10 in bin 1
    assert sum(light["histogram"]) == pytest.approx(1.0)
    assert light["histogram"][200 // 8] == pytest.approx(0.5) and light["histogram"][31] == pytest.approx(0.5)


def test_undecodable_images_count_but_add_no_pixels(tmp_path: Path) -> None:
    dataset = write_images(tmp_path / "imgs", {"a": [5, 5]})
    (tmp_path / "imgs/a/broken.png").write_bytes(b"\x89PNG not really")
    scan = scan_images(tmp_path / "imgs", dataset)
    profile = image_profile(scan.manifest, scan.histograms)
    assert profile["classes"]["a"]["images"] == 3 and profile["classes"]["a"]["pixels"] == 2 * 16


def test_ks_from_quantiles_matches_the_exact_statistic() -> None:
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(0)
    for shift in (0.0, 0.3, 1.0, 3.0):
        a, b = rng.normal(0, 1, 5000), rng.normal(shift, 1, 5000)
        approx = ks_from_quantiles(list(np.quantile(a, QUANTILES)), list(np.quantile(b, QUANTILES)))
        assert approx == pytest.approx(ks_2samp(a, b).statistic, abs=0.015)


def test_total_variation_bounds() -> None:
    assert total_variation({"a": 1.0}, {"a": 1.0}) == 0.0
    assert total_variation({"a": 1.0}, {"b": 1.0}) == 1.0
    assert total_variation(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == pytest.approx(0.5)


def test_table_drift_per_column() -> None:
    rng = np.random.default_rng(1)
    base = pd.DataFrame({"latency": rng.normal(20, 2, 4000), "client": rng.choice(["web", "mobile"], 4000),
                         "only_here": np.arange(4000)})
    same = base.copy()
    moved = base.drop(columns="only_here").assign(latency=base["latency"] + 10, client="web")
    assert drift_report("t", table_profile(same), "b", table_profile(base)).max_distance == 0.0
    rows = {r["column"]: r for r in drift_report("t", table_profile(moved), "b", table_profile(base)).rows}
    assert rows["latency"]["measure"] == "Kolmogorov-Smirnov" and rows["latency"]["distance"] > 0.95
    assert rows["client"]["measure"] == "total variation" and rows["client"]["distance"] == pytest.approx(0.5, abs=0.05)
    assert rows["only_here"]["distance"] == 1.0


def test_demo_drift_shows_the_domain_shift(demo_data: Path) -> None:
    loaded = load_spec(demo_data)
    assert loaded.spec.drift_pairs() == [("digits-cloud", "digits-onprem", None)]
    onprem, cloud = (validate_local(loaded, n).profile for n in ("digits-onprem", "digits-cloud"))
    shifted = drift_report("digits-cloud", cloud, "digits-onprem", onprem)
    same = drift_report("digits-onprem", onprem, "digits-onprem", onprem)
    assert len(shifted.rows) == 10 and all(r["distance"] > 0.3 for r in shifted.rows)
    assert same.max_distance == 0.0
    text = drift_markdown(shifted)
    assert "reported (no limit set)" in text and "| 7 | " in text


def test_drift_gate_fails_only_over_a_limit(demo_data: Path, tmp_path: Path) -> None:
    loaded = load_spec(demo_data)
    onprem, cloud = (validate_local(loaded, n).profile for n in ("digits-onprem", "digits-cloud"))
    assert drift_gate(drift_report("digits-cloud", cloud, "digits-onprem", onprem)).checks == ()
    assert drift_gate(drift_report("digits-cloud", cloud, "digits-onprem", onprem, limit=0.99)).success
    with pytest.raises(ValidationFailed) as err:
        drift_gate(drift_report("digits-cloud", cloud, "digits-onprem", onprem, limit=0.1), tmp_path / "docs")
    assert str(err.value).startswith("drift validation of dataset 'digits-cloud' failed: "
                                     "expect_column_values_to_be_between(column=distance) on drift: 10 unexpected; e.g. 0 (")
    assert (tmp_path / "docs/index.html").is_file()


def spec_with(demo_data: Path, tmp_path: Path, change) -> Path:
    data = yaml.safe_load(demo_data.read_text())
    change(data)
    tmp_path.mkdir(exist_ok=True)
    out = tmp_path / "spec.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    for name in ("data", "models"):
        (tmp_path / name).symlink_to(demo_data.parent / name)
    return out


@pytest.mark.parametrize(("drift", "message"), [
    ({"baseline": "nope"}, "datasets[1].drift.baseline: unknown dataset 'nope'"),
    ({"baseline": "digits-cloud"}, "datasets[1].drift.baseline: a dataset cannot be its own baseline"),
    ({"baseline": "request-log"}, "datasets[1].drift.baseline: dataset 'request-log' is table; 'digits-cloud' is images"),
    ({"baseline": "digits-onprem", "limit": 1.5}, "datasets[1].drift.limit"),
])
def test_bad_drift_settings_are_named(demo_data: Path, tmp_path: Path, drift: dict, message: str) -> None:
    path = spec_with(demo_data, tmp_path, lambda d: d["datasets"][1].update(drift=drift))
    with pytest.raises(SpecError, match=re.escape(message)):
        load_spec(path)


def test_the_model_implies_a_pair_unless_its_target_names_one(demo_data: Path, tmp_path: Path) -> None:
    model = {"name": "m", "architecture": "resnet18", "checkpoint": "data/request-log.parquet", "classes": [str(i) for i in range(10)],
             "input_size": 32, "source_dataset": "digits-onprem", "target_dataset": "digits-cloud"}

    def implied(d):
        d["model"] = model
        del d["datasets"][1]["drift"]

    assert load_spec(spec_with(demo_data, tmp_path / "a", implied)).spec.drift_pairs() == [("digits-cloud", "digits-onprem", None)]

    def explicit(d):
        d["model"] = model
        d["datasets"][1]["drift"]["limit"] = 0.8

    assert load_spec(spec_with(demo_data, tmp_path / "b", explicit)).spec.drift_pairs() == [("digits-cloud", "digits-onprem", 0.8)]


def test_a_gate_writes_data_docs_and_links_them(demo_data: Path, tmp_path: Path) -> None:
    result = validate_local(load_spec(demo_data), "request-log", docs_dir=tmp_path / "docs")
    index = tmp_path / "docs/index.html"
    assert result.docs == str(index) and index.is_file()
    pages = list((tmp_path / "docs/validations").rglob("*.html"))
    assert len(pages) == 1 and "request_id" in pages[0].read_text()
    assert f"Data Docs: [{index}]({index.as_uri()})" in gate_markdown(result)


def test_worker_processes_describe_exactly_what_this_process_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lepton_core.validation import decode

    write_images(tmp_path / "imgs", {"a": [0, 60, 120], "b": [180, 240]})
    Image.fromarray(np.full((4, 4), 99, dtype=np.uint8)).save(tmp_path / "imgs/b/really-a.jpg.png", format="JPEG")
    (tmp_path / "imgs/a/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    items = [(str(p), p.parent.name) for p in sorted((tmp_path / "imgs").rglob("*.png"))]
    here = decode.describe_all(items)
    monkeypatch.setattr(decode, "PROCESS_MIN_FILES", 0)
    columns, histograms = decode.describe_parallel(items, workers=2)
    assert columns == here[0] and histograms.keys() == here[1].keys()
    assert all((histograms[k] == here[1][k]).all() for k in histograms)
    for cls in ("a", "b"):  # the bulk-counted histograms are Pillow's own, summed over the class's decodable images
        decodable = [p for p, c in items if c == cls and not p.endswith("broken.png")]
        expected = sum(np.asarray(Image.open(p).convert("L").histogram(), dtype=np.int64) for p in decodable)
        assert (histograms[cls] == expected).all()
    by_name = {Path(p).name: {c: columns[c][i] for c in decode.COLUMNS} for i, (p, _) in enumerate(items)}
    assert by_name["really-a.jpg.png"]["decodes"] and by_name["really-a.jpg.png"]["mode"] == "L"  # found by content
    assert not by_name["broken.png"]["decodes"] and by_name["broken.png"]["error"]
