"""The serving-optimisation tasks: prepare (what is tuned, on which images, against what SLO),
one task per measurement (retried once: a measurement that fails outright, as opposed to a
configuration that cannot run, which the harness records as skipped), and finish (outputs, the
cutover bundle, and the artifacts: the trials table, the latency-versus-cost chart, the choice).

A measurement's result is kept under a key made of the checkpoint, the configuration, the
harness settings, the evaluation images and the flow run: a Retry of the run brings finished
measurements back Cached; the study's journal keeps them across runs."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import TaskRunContext

from lepton_core.optimize.harness import Measurement
from lepton_core.optimize.run import TABLE_COLUMNS, OptimizationResult, OptimizeJob, finish, prepare, trial_row
from lepton_core.optimize.space import Candidate
from lepton_core.optimize.study import StudyResult
from lepton_core.spec import LoadedSpec
from lepton_core.spec.params import OptimizeOptions
from tasks.artifacts import publish_chart
from tasks.policies import JITTER, TRANSIENT_DELAYS, TRANSIENT_RETRIES, retry_if_transient


@task(name="prepare-optimization", retries=TRANSIENT_RETRIES, retry_delay_seconds=TRANSIENT_DELAYS,
      retry_jitter_factor=JITTER, retry_condition_fn=retry_if_transient)
def prepare_optimization_task(loaded: LoadedSpec, model: str | None, options: OptimizeOptions, state_root: str,
                              run_dir: str) -> OptimizeJob:
    return prepare(loaded, model, options, state_root, run_dir, say=get_run_logger().info)


def _measurement_key(context: TaskRunContext, parameters: dict) -> str:
    return f"{parameters['job'].key(parameters['candidate'])}-{context.task_run.flow_run_id}"


@task(name="measure-serving", retries=1, retry_delay_seconds=5, cache_key_fn=_measurement_key,
      task_run_name="measure-{candidate.runtime}-{candidate.precision}-b{candidate.max_batch_size}")
def measure_serving_task(job: OptimizeJob, candidate: Candidate) -> Measurement:
    """One configuration measured against the real server."""
    m = job.measure(candidate)
    get_run_logger().info(f"{candidate.label()}: {m.status}"
                          + (f", {m.rate_rps:g} req/s at p95 {m.latency_ms['p95']:.1f} ms" if m.ok else f" ({m.reason})"))
    return m


@task(name="finish-optimization", retries=TRANSIENT_RETRIES, retry_delay_seconds=TRANSIENT_DELAYS,
      retry_jitter_factor=JITTER, retry_condition_fn=retry_if_transient)
def finish_optimization_task(loaded: LoadedSpec, job: OptimizeJob, study: StudyResult, state_root: str) -> OptimizationResult:
    logger = get_run_logger()
    try:
        result = finish(loaded, job, study, state_root, say=logger.info)
    finally:
        _artifacts(job, study)
    create_markdown_artifact(key="serving-choice", description=f"Serving configuration chosen for {job.model} {job.version}",
                             markdown=_choice_markdown(result))
    return result


def _artifacts(job: OptimizeJob, study: StudyResult) -> None:
    rows = [dict(zip(TABLE_COLUMNS, trial_row(t), strict=True)) for t in study.trials]
    create_table_artifact(key="serving-trials", table=rows,
                          description=f"Serving configurations tried for {job.model} {job.version} ({study.stopped})")
    chart = Path(job.work_dir) / "pareto.png"
    publish_chart(chart, "serving-pareto", f"Cost and p95 latency of {job.model} {job.version}'s serving "
                                           "configurations, with the Pareto front")


def _choice_markdown(r: OptimizationResult) -> str:
    m, p = r.chosen["measurement"], r.chosen["placement"]
    lines = [f"# Serving {r.model} {r.version}", "", r.summary() + ".", "",
             "| | chosen | baseline (eager fp32, batch 1) |", "|---|---|---|"]
    b = r.baseline["measurement"] if r.baseline else None
    bp = r.baseline["placement"] if r.baseline else None
    for name, get in (("requests/s at the SLO", lambda x, _p: x["rate_rps"]),
                      ("p95 ms at that rate", lambda x, _p: x["latency_ms"].get("p95")),
                      ("cores busy at that rate", lambda x, _p: x["cpu_cores"] or x["cores"]),
                      ("accuracy change, points", lambda x, _p: x["accuracy_delta"]),
                      ("peak memory, MB", lambda x, _p: x["peak_memory_mb"]),
                      ("USD per million predictions", lambda _x, pl: pl["usd_per_million"] if pl else None)):
        lines.append(f"| {name} | {get(m, p)} | {get(b, bp) if b else ''} |")
    lines += ["", f"{r.trials} trials ({r.skipped} skipped, {r.rejected} rejected); stopped because {r.stopped}."]
    if r.bundle_uri:
        lines.append(f"Written into the cutover bundle: `{r.bundle_uri}`")
    return "\n".join(lines) + "\n"
