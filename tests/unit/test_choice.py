"""Cloud choice: catalogues, the comparison's figures (checked by hand), ranking, store reach, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from lepton_core.choice.compare import Comparison, NoCloudFits, compare_clouds, comparison_lines, comparison_table
from lepton_core.spec import SpecError, load_spec
from lepton_core.spec.catalogue import BUNDLED_CATALOGUES, SECTIONS, Catalogue, catalogue_path

# Two clouds priced so that every figure can be worked out by hand (see test_hand_checked_costs).
ALPHA = {
    "provider": "aws", "region": "alpha-1", "as_of": "2026-11-01",
    "sources": [{"text": "alpha list prices", "covers": ["instances", "storage", "transfer"]},
                {"text": "alpha link quote", "covers": ["links"], "as_of": "2026-10-15"}],
    "storage_gb_month": 0.02, "transfer_in_per_gb": 0.01, "transfer_out_per_gb": 0.05,
    "instances": [
        {"name": "small", "family": "general", "vcpu": 2, "memory_gb": 4, "price_per_hour": 0.10},
        {"name": "large", "family": "general", "vcpu": 8, "memory_gb": 32, "price_per_hour": 0.40},
        {"name": "gpu", "family": "gpu", "vcpu": 8, "memory_gb": 32, "gpu": 1, "gpu_model": "L4", "price_per_hour": 1.00},
    ],
    "links": [{"name": "link-1g", "gbps": 1.0, "price_per_hour": 0.50, "efficiency": 0.75}],
}
BETA = {
    "provider": "gcp", "region": "beta-1", "as_of": "2026-11-01", "sources": ["beta negotiated prices, contract 42"],
    "storage_gb_month": 0.025, "transfer_in_per_gb": 0.0, "transfer_out_per_gb": 0.10,
    "instances": [
        {"name": "b-small", "family": "general", "vcpu": 2, "memory_gb": 4, "price_per_hour": 0.08},
        {"name": "b-large", "family": "general", "vcpu": 8, "memory_gb": 32, "price_per_hour": 0.50},
        {"name": "b-gpu", "family": "gpu", "vcpu": 8, "memory_gb": 32, "gpu": 1, "gpu_model": "L4", "price_per_hour": 0.90},
    ],
    "links": [{"name": "link-1g", "gbps": 1.0, "price_per_hour": 0.20, "efficiency": 0.75}],
}


def write_spec(folder: Path, alpha: dict = ALPHA, beta: dict = BETA, *, target: dict | None = None,
               choice: dict | None = None) -> Path:
    """A 3-service system (no dependencies, 25 GB of data) with two private catalogues."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.csv").write_text("id,value\n1,2.5\n2,3.5\n")
    (folder / "alpha.yaml").write_text(yaml.safe_dump(alpha, sort_keys=False))
    (folder / "beta.yaml").write_text(yaml.safe_dump(beta, sort_keys=False))
    spec = {
        "name": "three", "datasets": [{"name": "log", "location": "log.csv", "kind": "table"}],
        "services": [
            {"name": "api", "cpu": 2, "memory_gb": 4, "traffic_rps": 100, "data_gb": 10, "onprem_cost_per_hour": 0.30,
             "egress_gb_month": 100},
            {"name": "db", "cpu": 8, "memory_gb": 32, "traffic_rps": 50, "data_gb": 10, "onprem_cost_per_hour": 0.80},
            {"name": "infer", "cpu": 8, "memory_gb": 32, "gpu": 1, "traffic_rps": 200, "data_gb": 5, "onprem_cost_per_hour": 1.50},
        ],
        "target": target or {"provider": "auto", "bucket": "three-bucket"},
        # the yardsticks only, unless a test asks for the exact planner (its plan depends on its time limit)
        "cloud_choice": {"candidates": ["alpha.yaml", "beta.yaml"], "exact_max_workloads": 0, **(choice or {})},
        "budget": {"migration_usd": 1000, "monthly_usd": 5000, "horizon_months": 12},
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_hand_checked_costs(tmp_path: Path) -> None:
    """The cheapest yardstick (greedy) starts every service at once, one per hour (db, infer, api);
    25 GB in all, each transfer done in its first hour, one hour of cutover each; all in the cloud
    at hour 4."""
    c = compare_clouds(load_spec(write_spec(tmp_path)))
    a, b = c.option("alpha.yaml"), c.option("beta.yaml")
    assert a.method == b.method == "greedy" and set(a.plans) == {"lift-shift", "waves", "greedy"}
    assert a.instances == {"db": "large", "infer": "gpu", "api": "small"}
    assert b.instances == {"db": "b-large", "infer": "b-gpu", "api": "b-small"}
    assert a.finish_hours == b.finish_hours == 4 and a.downtime_minutes == b.downtime_minutes == 15
    # one-off: 25 GB x $0.01, 3 link hours x $0.50, one hour of each instance while its twin still
    # runs (0.40 + 1.00 + 0.10), 5 min down x $20 per 1,000 req/s-minute x 350 req/s
    assert a.one_off_parts == {"transfer": 0.25, "link": 1.50, "dual_running": 1.50, "downtime": 35.0, "cross_site": 0.0}
    assert a.one_off == 38.25
    assert b.one_off_parts == {"transfer": 0.0, "link": 0.60, "dual_running": 1.48, "downtime": 35.0, "cross_site": 0.0}
    # while migrating: on-prem db 2 h x 0.80 + infer 3 h x 1.50 + api 4 h x 0.30 = 7.30; then the
    # cloud past cutover: db 2 h, infer 1 h
    assert a.running_while_migrating == pytest.approx(7.30 + 2 * 0.40 + 1 * 1.00)
    assert b.running_while_migrating == pytest.approx(7.30 + 2 * 0.50 + 1 * 0.90)
    # monthly: 730 h of the three instances + 25 GB stored + 100 GB egress
    assert a.monthly_parts == {"compute": 1095.0, "storage": 0.5, "egress": 5.0} and a.monthly == 1100.5
    assert b.monthly_parts == {"compute": 1080.4, "storage": 0.62, "egress": 10.0}
    assert a.onprem_monthly == b.onprem_monthly == 1898.0
    # total over 12 months: one-off + running while migrating + monthly x (12 - 4/730)
    assert a.total == pytest.approx(38.25 + 9.10 + 1100.5 * (12 - 4 / 730), abs=0.01)
    assert b.total == pytest.approx(37.08 + 9.20 + 1091.025 * (12 - 4 / 730), abs=0.01)
    assert a.onprem_total == 1898.0 * 12
    # break-even: the month the cloud's cumulative cost meets staying on-prem
    assert a.break_even_months == pytest.approx((47.35 - 1100.5 * 4 / 730) / (1898 - 1100.5), abs=0.005)
    # ranked by total cost: beta first, its margin in dollars and percent
    assert [o.ref for o in c.ranked] == ["beta.yaml", "alpha.yaml"] and c.recommended is b
    lead = a.total - b.total
    assert c.margin == f"${lead:,.0f} ({lead / a.total:.1%}) less than the runner-up, aws-alpha-1"
    assert c.recommendation().startswith(f"recommended: gcp-beta-1 (${b.total:,.0f} over 12 months)")


def test_small_systems_are_planned_with_the_exact_planner_too(tmp_path: Path) -> None:
    c = compare_clouds(load_spec(write_spec(tmp_path, choice={"exact_max_workloads": 3, "exact_seconds": 20})))
    for o in c.ranked:  # the exact planner starts from the cheapest yardstick: never worse
        assert "exact" in o.plans and o.plans["exact"] <= min(v for k, v in o.plans.items() if k != "exact")
        assert o.method in ("exact", "greedy")
    assert c.recommended.ref == "beta.yaml"


def test_ranking_flips_when_prices_change(tmp_path: Path) -> None:
    dearer = {**BETA, "instances": [dict(it, price_per_hour=1.10) if it["name"] == "b-gpu" else it for it in BETA["instances"]]}
    c = compare_clouds(load_spec(write_spec(tmp_path, beta=dearer)))
    assert [o.ref for o in c.ranked] == ["alpha.yaml", "beta.yaml"]
    assert c.option("beta.yaml").monthly_parts["compute"] == pytest.approx(730 * (1.10 + 0.50 + 0.08))
    # the other objective: both finish at hour 4 within budget, so the cheaper one leads on the tie
    t = compare_clouds(load_spec(write_spec(tmp_path / "t", beta=dearer)), objective="time_under_budget")
    assert t.recommended.ref == "alpha.yaml" and t.margin.startswith("as soon as the runner-up, gcp-beta-1, and $")


def test_time_under_budget_skips_clouds_over_budget(tmp_path: Path) -> None:
    over = {**ALPHA, "transfer_in_per_gb": 40.0 / 25 + 0.01}  # alpha's one-off: 25 GB x $1.61 = $40.25 more
    spec = write_spec(tmp_path, alpha=over, choice={"objective": "time_under_budget"})
    text = spec.read_text().replace("migration_usd: 1000", "migration_usd: 50")
    spec.write_text(text)
    c = compare_clouds(load_spec(spec))
    a = c.option("alpha.yaml")
    assert not a.within_budget and a.budget_notes == (f"one-off ${a.one_off:,.0f} is over the migration budget $50",)
    assert c.recommended.ref == "beta.yaml" and c.margin.startswith("the only candidate within budget")
    spec.write_text(text.replace("migration_usd: 50", "migration_usd: 10"))
    none = compare_clouds(load_spec(spec))
    assert none.recommended is None and "no candidate cloud is within the budget" in none.recommendation()
    with pytest.raises(NoCloudFits, match="within the budget"):
        none.choice_for_migration()


def test_migration_moves_only_where_the_data_path_reaches(tmp_path: Path) -> None:
    blob = {**BETA, "provider": "azure"}  # Azure Blob Storage: not S3-compatible
    loaded = load_spec(write_spec(tmp_path, beta=blob))
    c = compare_clouds(loaded)
    assert c.recommended.ref == "beta.yaml" and not c.option("beta.yaml").reachable
    assert c.choice_for_migration().ref == "alpha.yaml"
    assert any("Azure Blob Storage is not S3-compatible" in line for line in comparison_lines(c))
    # with an S3 endpoint in the spec (a gateway), the data goes there whatever the cloud
    gateway = load_spec(write_spec(tmp_path / "gw", beta=blob,
                                   target={"provider": "auto", "bucket": "three-bucket", "endpoint_url": "http://gateway.internal:9000"}))
    assert compare_clouds(gateway).choice_for_migration().ref == "beta.yaml"
    # moving to Google Cloud Storage sets its S3-compatible endpoint, the region and the catalogue
    gcs = load_spec(write_spec(tmp_path / "gcs")).with_cloud("beta.yaml")
    assert (gcs.spec.target.provider, gcs.spec.target.region, gcs.spec.target.endpoint_url) == ("gcp", "beta-1", "https://storage.googleapis.com")
    assert gcs.catalogue.name == "gcp-beta-1" and gcs.spec.target.catalogue == "beta.yaml"


def test_bad_catalogue_is_refused_with_its_file_and_line(tmp_path: Path) -> None:
    negative = {**ALPHA, "instances": [dict(ALPHA["instances"][0], price_per_hour=-0.1), *ALPHA["instances"][1:]]}
    with pytest.raises(SpecError) as err:
        load_spec(write_spec(tmp_path / "neg", alpha=negative))
    bad = tmp_path / "neg" / "alpha.yaml"
    line = next(n for n, text in enumerate(bad.read_text().splitlines(), 1) if "price_per_hour: -0.1" in text)
    assert str(err.value) == f"{bad}:{line}: instances[0].price_per_hour: input should be greater than 0 (got -0.1)"
    missing = {k: v for k, v in BETA.items() if k != "storage_gb_month"}
    with pytest.raises(SpecError, match=r"beta\.yaml:1: storage_gb_month: required field is missing"):
        load_spec(write_spec(tmp_path / "miss", beta=missing))
    unsourced = {**ALPHA, "sources": [{"text": "alpha list prices", "covers": ["instances", "storage", "transfer"]}]}
    with pytest.raises(SpecError, match=r"alpha\.yaml:\d+: sources: no source for the links figures"):
        load_spec(write_spec(tmp_path / "src", alpha=unsourced))
    negative_egress = {**BETA, "transfer_out_per_gb": -1}
    with pytest.raises(SpecError, match=r"transfer_out_per_gb: input should be greater than or equal to 0"):
        load_spec(write_spec(tmp_path / "egress", beta=negative_egress))
    spec = write_spec(tmp_path / "gone")
    (tmp_path / "gone" / "beta.yaml").unlink()
    with pytest.raises(SpecError, match=r"spec\.yaml:\d+: cloud_choice\.candidates\[1\]: catalogue file not found"):
        load_spec(spec)
    # and on the command line: one line per problem, exit code 2
    result = CliRunner().invoke(app, ["compare-clouds", str(write_spec(tmp_path / "cli", alpha=negative))])
    assert result.exit_code == 2 and "instances[0].price_per_hour: input should be greater than 0" in result.output


def test_spec_rules_for_an_open_provider(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"target\.region: chosen with the cloud when provider is 'auto'"):
        load_spec(write_spec(tmp_path / "r", target={"provider": "auto", "bucket": "three-bucket", "region": "us-east-1"}))
    with pytest.raises(SpecError, match=r"cloud_choice\.candidates\[1\]: listed twice"):
        load_spec(write_spec(tmp_path / "twice", choice={"candidates": ["alpha.yaml", "alpha.yaml"]}))
    with pytest.raises(SpecError, match=r"target\.catalogue: catalogue gcp-beta-1 prices gcp, but target\.provider is 'aws'"):
        load_spec(write_spec(tmp_path / "p", target={"provider": "aws", "bucket": "three-bucket", "catalogue": "beta.yaml"}))


def test_bundled_catalogues_cover_three_providers_two_regions_each() -> None:
    cats = [Catalogue.model_validate(yaml.safe_load(catalogue_path(n, Path(".")).read_text())) for n in BUNDLED_CATALOGUES]
    assert [c.name for c in cats] == list(BUNDLED_CATALOGUES)
    regions: dict[str, set] = {}
    for c in cats:
        regions.setdefault(c.provider, set()).add(c.region)
        assert {"general", "compute", "gpu"} <= {it.family for it in c.instances}, c.name
        assert c.links and c.storage_gb_month > 0 and c.transfer_out_per_gb > 0
        assert all(c.source_of(section) for section in SECTIONS), c.name
        assert any(it.family == "gpu" and it.vcpu >= 16 and it.memory_gb >= 64 and it.gpu == 1 for it in c.instances), c.name
    assert {p: len(r) for p, r in regions.items()} == {"aws": 2, "azure": 2, "gcp": 2}
    s3 = {c.provider: c.object_store.s3_compatible for c in cats}
    assert s3 == {"aws": True, "azure": False, "gcp": True}
    # the AWS regions share the instance types the PPO planner is trained on
    assert cats[0].instance_names == cats[1].instance_names


def test_the_demo_compares_every_bundled_cloud(demo_data: Path, tmp_path: Path) -> None:
    loaded = load_spec(demo_data)
    assert loaded.cloud_open and [c.name for c in loaded.candidates] == list(BUNDLED_CATALOGUES)
    result = CliRunner().invoke(app, ["compare-clouds", str(demo_data), "--candidate", "aws-us-east-1", "--candidate",
                                      "gcp-us-central1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "recommended: " in result.output and "less than the runner-up" in result.output
    data = json.loads((tmp_path / "comparison.json").read_text())
    assert {o["catalogue"] for o in data["options"]} == {"aws-us-east-1", "gcp-us-central1"}
    assert (tmp_path / "clouds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the JSON reads back into the same comparison, and the table artifact has one row per cloud, best first
    again = Comparison.from_dict(data)
    assert json.loads(json.dumps(again.to_dict())) == data
    rows = comparison_table(again)
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["cloud"] == data["options"][0]["catalogue"]
    assert not any(math.isinf(r["total_12_months_usd"]) for r in rows)


def test_a_migration_stays_on_the_cloud_it_chose(tmp_path: Path, state_root: Path) -> None:
    from lepton_core.choice.record import read_record, record_path, settled, write_record
    from lepton_core.errors import UsageError

    loaded = load_spec(write_spec(tmp_path / "s"))
    assert loaded.cloud_open and loaded.catalogue.name == "aws-alpha-1"  # the first candidate until chosen
    # nothing chosen yet: where the data lives depends on the cloud (no endpoint in the spec)
    with pytest.raises(UsageError, match="no migration of it has chosen a cloud yet"):
        settled(loaded)
    embedded = load_spec(write_spec(tmp_path / "e", target={"provider": "auto", "bucket": "three-bucket", "endpoint_url": "embedded"}))
    assert settled(embedded) is embedded  # its store is the one it names, whatever the cloud
    path = write_record(loaded, "beta.yaml", "run-1", {"spec": "three"})
    assert path == record_path(loaded) and path.parent == state_root / "clouds"
    assert read_record(loaded).chosen == "beta.yaml"
    moved = settled(loaded)
    assert not moved.cloud_open and moved.catalogue.name == "gcp-beta-1" and moved.spec.target.provider == "gcp"
    # the same spec moved to another prefix is another migration, with no record yet
    other = load_spec(write_spec(tmp_path / "o", target={"provider": "auto", "bucket": "three-bucket", "prefix": "elsewhere"}))
    assert read_record(other) is None
    # a record whose cloud the spec no longer lists is refused: the data would go elsewhere
    narrowed = load_spec(write_spec(tmp_path / "s", choice={"candidates": ["alpha.yaml"]}))
    with pytest.raises(UsageError, match="moved to 'beta.yaml', which is no longer among the spec's cloud_choice.candidates"):
        settled(narrowed)
    # compare-clouds compares afresh and says which cloud the migration is bound to
    result = CliRunner().invoke(app, ["compare-clouds", str(write_spec(tmp_path / "s"))])
    assert result.exit_code == 0 and "this migration is bound to beta.yaml (chosen by run run-1" in result.output
    # plan plans on the chosen cloud's catalogue (the first candidate's only when asked for)
    beta = [i["name"] for i in BETA["instances"]]
    planned = CliRunner().invoke(app, ["plan", str(write_spec(tmp_path / "s"))])
    assert planned.exit_code == 0 and any(name in planned.output for name in beta), planned.output
    asked = CliRunner().invoke(app, ["plan", str(write_spec(tmp_path / "s")), "--cloud", "alpha.yaml"])
    assert asked.exit_code == 0 and not any(name in asked.output for name in beta), asked.output
    unchosen = CliRunner().invoke(app, ["plan", str(other.path)])  # the other migration, no record yet: the first candidate
    assert unchosen.exit_code == 0 and not any(name in unchosen.output for name in beta), unchosen.output
