"""The train-planner flow: trains into the state folder, publishes its artifact, and a re-run
goes on from the checkpoint instead of starting over."""

from __future__ import annotations

from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.train_planner import train_planner_flow
from lepton_core.spec.params import PlannerTraining


def test_train_planner_flow_trains_into_the_state_folder_and_resumes(flow_home: Path) -> None:
    options = PlannerTraining(total_timesteps=1024, num_envs=8, num_steps=64, max_workloads=6, min_workloads=3)
    state = train_planner_flow(options, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["policy"] == str(flow_home / "planner" / "policy.pt") and result["global_step"] == 1024
    assert (flow_home / "planner" / "learning_curve.png").is_file()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["planner-training"])))
        curves = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["planner-learning-curve"])))
    assert artifacts and "- steps: 1,024 (trained afresh)" in artifacts[-1].data and result["resumed_from"] == 0
    assert result["selected_step"] == 1024  # two iterations: scored at the end only
    assert "the snapshot of step 1,024: " in artifacts[-1].data and "on the validation systems" in artifacts[-1].data
    assert curves and curves[-1].type == "image" and curves[-1].data.startswith("data:image/png;base64,")
    longer = train_planner_flow(options.model_copy(update={"total_timesteps": 1536}))
    assert longer["global_step"] == 1536 and longer["selected_step"] in (1024, 1536)  # the end scored again
    assert longer["resumed_from"] == 1024 and longer["went_on"] == "went on from step 1,024, where the checkpoint of an earlier run stopped"
    again = train_planner_flow(options.model_copy(update={"total_timesteps": 1536}))
    assert again["resumed_from"] == 1536 and again["went_on"] == "already trained that far: nothing left to do"
    assert len((flow_home / "planner" / "progress.csv").read_text().splitlines()) == 1 + 3
