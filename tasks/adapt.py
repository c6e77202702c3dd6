"""The adaptation task: fine-tune the on-prem model to the target's data, compare it with the model
as it is and with one trained from scratch, register it. Training checkpoints live in the state
folder, so a retried task (or a re-run flow) goes on from the last epoch instead of starting over."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from lepton_core.spec import LoadedSpec
from lepton_core.spec.params import AdaptOptions
from tasks.artifacts import publish_chart
from tasks.policies import JITTER, TRANSIENT_DELAYS, TRANSIENT_RETRIES, gpu_slot, retry_if_transient


@task(name="adapt-model", retries=TRANSIENT_RETRIES, retry_delay_seconds=TRANSIENT_DELAYS, retry_jitter_factor=JITTER,
      retry_condition_fn=retry_if_transient)
def adapt_model_task(loaded: LoadedSpec, options: AdaptOptions, state_root: str, run_dir: str):
    """Returns the ``AdaptResult``; writes ``adapt/`` under ``run_dir`` and a ``model-adaptation`` artifact."""
    from lepton_core.transfer.adapt import adapt_model

    logger = get_run_logger()
    with gpu_slot():
        result = adapt_model(loaded, options, state_root, run_dir, flow_run_id=flow_run.get_id(), say=logger.info)
    logger.info(result.summary())
    where = f"\n\nRegistered: `{result.registry_uri}` (version `{result.version}`)" if result.registry_uri else ""
    create_markdown_artifact(key="model-adaptation", description=f"Adaptation of {result.model}", markdown=(
        f"# Adapting {result.model}\n\n{result.summary()}\n\n{result.table}{where}\n"))
    create_table_artifact(key="model-metrics", description=f"{result.model}: the models on each test split", table=[
        {"model": name, "test split": split, "accuracy": round(m.accuracy, 4), "macro_f1": round(m.macro_f1, 4),
         "calibration_error": round(m.calibration_error, 4), "images": m.images}
        for split, table in (("target", result.metrics), ("source", result.on_source)) for name, m in table.items()])
    publish_chart(result.curve, "adaptation-curve", f"{result.model}: validation accuracy while training")
    return result
