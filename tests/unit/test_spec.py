"""The spec: the demo spec loads; every kind of bad spec gets one located message and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from lepton_core.spec import SpecError, load_spec
from lepton_core.spec.models import find_cycle
from lepton_core.spec.params import TargetOverrides

runner = CliRunner()


def variant(demo_spec: Path, name: str, old: str, new: str) -> tuple[Path, str]:
    """A copy of the demo spec beside it (so relative paths still resolve) with one edit."""
    text = demo_spec.read_text()
    assert old in text, f"the demo spec no longer contains {old!r}"
    path = demo_spec.parent / f"bad-{name}.yaml"
    edited = text.replace(old, new, 1)
    path.write_text(edited)
    return path, edited


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def check_fails(path: Path, *fragments: str) -> str:
    """`lepton check-spec` exits 2 and prints every fragment in its error output."""
    result = runner.invoke(app, ["check-spec", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert all(line.startswith("error: ") for line in result.stderr.splitlines())
    return result.stderr


def test_demo_spec_is_valid(demo_data: Path) -> None:
    loaded = load_spec(demo_data)
    assert loaded.spec.name == "digits-demo"
    assert [d.kind for d in loaded.spec.datasets] == ["images", "images", "table"]
    assert len(loaded.spec.services) == 12
    assert loaded.catalogue.instance("m5.large").price_per_hour == pytest.approx(0.096)
    result = runner.invoke(app, ["check-spec", str(demo_data)])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"ok: {demo_data}: digits-demo: 3 datasets, 12 services")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ndatasets: [\n  {name: a\n")
    err = check_fails(path, f"{path}:", "invalid YAML")
    assert err.count("\n") == 1


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# only a comment\n")
    check_fails(path, f"error: {path}: the file is empty")


def test_list_instead_of_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- name: a\n- name: b\n")
    check_fails(path, f"error: {path}:1: expected a mapping of fields at the top level, found a list")


def test_missing_file(tmp_path: Path) -> None:
    check_fails(tmp_path / "nope.yaml", "nope.yaml: file not found")


def test_unknown_field_suggests_the_right_one(demo_data: Path) -> None:
    path, text = variant(demo_data, "unknown", "  cpu: 4\n  memory_gb: 16\n", "  cpus: 4\n  memory_gb: 16\n")
    line = line_of(text, "cpus: 4")
    check_fails(path, f"{path}:{line}: services[0].cpus: unknown field 'cpus'; did you mean 'cpu'?")


def test_unknown_top_level_field(demo_data: Path) -> None:
    path, text = variant(demo_data, "unknown-top", "version: 1\n", "version: 1\ncolour: blue\n")
    check_fails(path, f"{path}:{line_of(text, 'colour')}: colour: unknown field 'colour'")


def test_wrong_type(demo_data: Path) -> None:
    path, text = variant(demo_data, "type", "  cpu: 4\n  memory_gb: 16\n", "  cpu: lots\n  memory_gb: 16\n")
    check_fails(path, f"{path}:{line_of(text, 'cpu: lots')}: services[0].cpu: input should be a valid number", "(got 'lots')")


def test_negative_size(demo_data: Path) -> None:
    path, text = variant(demo_data, "negative", "data_gb: 1200", "data_gb: -5")
    check_fails(path, f"{path}:{line_of(text, 'data_gb: -5')}: services[3].data_gb: input should be greater than or equal to 0 (got -5)")


def test_missing_required_field(demo_data: Path) -> None:
    path, _ = variant(demo_data, "missing", "  bucket: lepton-demo\n", "")
    check_fails(path, "target.bucket: required field is missing")


def test_an_empty_list_says_how_many_entries_it_needs(demo_data: Path) -> None:
    lines = demo_data.read_text().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line == "datasets:\n")
    last = next(i for i in range(first + 1, len(lines)) if not lines[i].startswith((" ", "-")))  # the next top-level key
    path = demo_data.parent / "bad-no-datasets.yaml"
    path.write_text("".join(lines[:first]) + "datasets: []\n" + "".join(lines[last:]))
    check_fails(path, f"{path}:{first + 1}: datasets: needs at least 1 entry, has 0")


def test_duplicate_names(demo_data: Path) -> None:
    path, text = variant(demo_data, "dup", "- name: auth\n", "- name: user-db\n")
    second = [i for i, line in enumerate(text.splitlines(), 1) if line == "- name: user-db"][1]
    check_fails(path, f"{path}:{second}: services[1].name: duplicate name 'user-db' (already used by services[0])")


def test_duplicate_yaml_key(demo_data: Path) -> None:
    path, text = variant(demo_data, "dupkey", "name: digits-demo\n", "name: digits-demo\nname: other\n")
    check_fails(path, f"{path}:{line_of(text, 'name: other')}: name: duplicate key")


def test_dependency_on_unknown_service(demo_data: Path) -> None:
    path, text = variant(demo_data, "unknown-dep", "depends_on: [user-db]\n", "depends_on: [user-dbb]\n")
    check_fails(path, f"{path}:{line_of(text, '[user-dbb]')}: services[1].depends_on[0]: unknown service 'user-dbb'")


def test_dependency_cycle_names_the_services(demo_data: Path) -> None:
    # user-db now depends on auth, which already depends on user-db.
    path, _ = variant(demo_data, "cycle", "  cpu: 4\n  memory_gb: 16\n", "  cpu: 4\n  memory_gb: 16\n  depends_on: [auth]\n")
    check_fails(path, "dependency cycle: user-db -> auth -> user-db")


def test_self_dependency(demo_data: Path) -> None:
    path, _ = variant(demo_data, "self", "depends_on: [user-db]\n", "depends_on: [auth]\n")
    check_fails(path, "services[1].depends_on[0]: service 'auth' depends on itself")


def test_dataset_path_that_does_not_exist(demo_data: Path) -> None:
    path, text = variant(demo_data, "nopath", "location: data/digits-cloud\n", "location: data/digits-clouds\n")
    check_fails(path, f"{path}:{line_of(text, 'digits-clouds')}: datasets[1].location: path does not exist: {demo_data.parent / 'data/digits-clouds'}")


def test_unknown_instance_type(demo_data: Path) -> None:
    path, text = variant(demo_data, "instance", "  cpu: 4\n  memory_gb: 16\n", "  cpu: 4\n  memory_gb: 16\n  instance_type: m5.larg\n")
    check_fails(path, f"{path}:{line_of(text, 'm5.larg')}: services[0].instance_type: unknown instance type 'm5.larg'",
                "did you mean 'm5.large'?")


def test_unknown_dataset_reference_and_bad_bucket(demo_data: Path) -> None:
    path, _ = variant(demo_data, "bucket", "bucket: lepton-demo", "bucket: Lepton_Demo")
    check_fails(path, "target.bucket: must be 3-63 characters")
    path, _ = variant(demo_data, "dsref", "datasets: [request-log]", "datasets: [request-logs]")
    check_fails(path, "unknown dataset 'request-logs'")


def test_yaml_booleans_get_a_hint(demo_data: Path) -> None:
    path, text = variant(demo_data, "norway", "bucket: lepton-demo", "bucket: no")
    check_fails(path, f"{path}:{line_of(text, 'bucket: no')}: target.bucket: input should be a valid string (got False); "
                      "YAML reads yes/no/on/off as true/false: put the value in quotes")


def test_several_problems_each_on_a_line(demo_data: Path) -> None:
    path, _ = variant(demo_data, "several", "  cpu: 4\n  memory_gb: 16\n", "  cpu: -4\n  memory_gb: -16\n")
    err = check_fails(path, "services[0].cpu", "services[0].memory_gb")
    assert len(err.splitlines()) == 2


def test_s3_locations_are_not_checked_on_disk(demo_data: Path) -> None:
    path, _ = variant(demo_data, "s3loc", "location: data/digits-cloud\n", "location: s3://cloud-bucket/digits\n")
    assert load_spec(path).spec.dataset("digits-cloud").location == "s3://cloud-bucket/digits"
    path, _ = variant(demo_data, "gsloc", "location: data/digits-cloud\n", "location: gs://cloud-bucket/digits\n")
    check_fails(path, "unsupported location scheme 'gs'")


def test_kms_needs_a_key(demo_data: Path) -> None:
    path, _ = variant(demo_data, "kms", "encryption: AES256", "encryption: aws:kms")
    check_fails(path, "target.kms_key_id: required when encryption is 'aws:kms'")


def test_overrides_are_validated_like_the_spec(demo_data: Path) -> None:
    spec = load_spec(demo_data).spec
    assert TargetOverrides(prefix="other").apply(spec).target.prefix == "other"
    assert TargetOverrides().apply(spec) is spec
    with pytest.raises(SpecError, match=r"^target overrides: endpoint_url: must be 'embedded', an http\(s\):// URL"):
        TargetOverrides(endpoint_url="ftp://x").apply(spec)


def test_cycle_finder_handles_long_chains() -> None:
    chain = {str(i): (str(i + 1),) for i in range(3000)}
    assert find_cycle(chain) == []
    chain["3000"] = ("0",)
    assert len(find_cycle(chain)) == 3001


def test_exit_code_and_no_traceback_from_the_real_command(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("[1, 2]\n")
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "check-spec", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {path}:1: expected a mapping of fields at the top level, found a list\n"
    assert proc.stdout == ""
