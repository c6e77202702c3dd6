"""The optimize-serving flow on the demo's on-prem checkpoint against the real model server: a second
run continues the study instead of starting over; the artifacts (trials table, chart, choice);
the chosen configuration meets the SLO when measured again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lepton_core.optimize.harness import SKIPPED, HarnessSettings, load_step, request_bodies
from lepton_core.optimize.space import Candidate
from lepton_core.serving.client import ServerProcess
from tests.conftest import onprem_evaluation, spec_variant

@pytest.fixture(scope="module")
def evaluation(demo_full: Path):
    return onprem_evaluation(demo_full, "digits-cloud")


@pytest.fixture(scope="module")
def onprem(evaluation) -> Path:
    return evaluation[0]


def test_the_flow_continues_its_study_and_its_choice_meets_the_slo_again(demo_full: Path, onprem: Path, evaluation,
                                                                        flow_home: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.optimize import optimize_serving_flow
    from lepton_core.spec.params import OptimizeOptions, SpecRef

    spec = spec_variant(demo_full, "spec-optimize.yaml", p95_latency_ms=150)
    options = dict(step_seconds=1.0, max_steps=4, eval_images=40, data="location", patience=10)
    first = optimize_serving_flow(spec=SpecRef(path=str(spec)), model=str(onprem),
                                  optimizing=OptimizeOptions(trials=2, **options), return_state=True)
    assert first.is_completed(), first.message
    runs = sorted((flow_home / "runs").iterdir())
    trials_1 = json.loads((runs[-1] / "optimize" / "trials.json").read_text())
    assert trials_1["trials"][0]["measurement"]["candidate"]["runtime"] == "eager" and trials_1["baseline"] == 0
    second = optimize_serving_flow(spec=SpecRef(path=str(spec)), model=str(onprem),
                                   optimizing=OptimizeOptions(trials=3, **options), return_state=True)
    assert second.is_completed(), second.message
    trials_2 = json.loads((sorted((flow_home / "runs").iterdir())[-1] / "optimize" / "trials.json").read_text())
    assert trials_2["resumed"] == len(trials_1["trials"])  # the first run's trials, not measured again
    fresh = [t for t in trials_2["trials"][len(trials_1["trials"]):] if t["reused_from"] is None
             and t["measurement"]["status"] != SKIPPED]
    assert len(fresh) == 1  # a budget of 3 measurements, 2 spent by the first run
    result = second.result()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[second.state_details.flow_run_id])))
    keys = {a.key for a in artifacts}
    assert {"serving-trials", "serving-pareto", "serving-choice"} <= keys
    pareto = next(a for a in artifacts if a.key == "serving-pareto")
    assert pareto.data.startswith("data:image/png;base64,")
    # the choice, measured again: its server serves half its measured rate within the SLO
    from lepton_core.serving.server import ServeConfig

    chosen = Candidate(**result["serving"])
    _, evalset, _ = evaluation
    (flow_home / "again").mkdir()
    serving = json.loads((sorted((flow_home / "runs").iterdir())[-1] / "optimize" / "serving.json").read_text())
    config, rate = ServeConfig(**serving["serving"]), serving["measurement"]["rate_rps"]
    assert (config.runtime, config.precision, config.max_batch_size) == (chosen.runtime, chosen.precision, chosen.max_batch_size)
    steps = []
    with ServerProcess(onprem, config=config, log=flow_home / "again" / "chosen.log") as server:
        bodies = request_bodies(evalset, 8, flow_home / "again" / "bodies")
        for _ in range(2):  # a stall of this shared host can spoil one 2-s step; a choice that misses the SLO misses both
            steps.append(load_step(server.url + "/predict", bodies, rate / 2, HarnessSettings(slo_p95_ms=150, step_seconds=2.0,
                                                                                             min_requests=20)))
            if steps[-1]["latency_ms"]["p95"] <= 150:
                break
    assert all(s["errors"] == 0 for s in steps) and steps[-1]["latency_ms"]["p95"] <= 150, [s["latency_ms"] for s in steps]
