"""What the flows share about their run: its folder, the task runner its fan-out tasks run on, and
the summary written when it fails."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from prefect import get_client
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from lepton_core.fsutil import atomic_write_text
from lepton_core.state import runs_dir


def run_folder(suffix: str = "", run=None) -> tuple[str, dt.datetime, Path]:
    """The run's name, start and folder, taken from the flow run (``run``, or the current one): its
    creation time and name.

    A Retry runs the flow again from the top under the same flow run: it must write into the same
    folder and give its tasks the same inputs, or their cache keys would change and nothing would
    come back Cached."""
    if run is None:
        ctx = FlowRunContext.get()
        run = ctx.flow_run if ctx is not None else None
    created = getattr(run, "created", None)
    started = dt.datetime.fromtimestamp(created.timestamp(), dt.timezone.utc) if created else dt.datetime.now(dt.timezone.utc)
    name = f"{started:%Y%m%d-%H%M%S}-{getattr(run, 'name', None) or flow_run.get_name() or 'local'}{suffix}"
    return name, started, runs_dir() / name


DASK_ENV = "LEPTON_DASK"


def fan_out_runner(threads: int = 2):
    """The task runner of a flow's fan-out (per dataset, per gate): ``threads`` threads in the
    flow's process by default; with ``LEPTON_DASK=local``, a local Dask cluster of one worker
    process per core that the run starts and stops; with ``LEPTON_DASK=tcp://HOST:8786``, that
    Dask cluster's scheduler (its workers need this project installed, as a Prefect worker does).
    Read when the flow's module is imported: set it in the worker's environment or the
    deployment's job variables (``env``)."""
    choice = os.environ.get(DASK_ENV, "").strip()
    if not choice:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=threads)
    from prefect_dask import DaskTaskRunner

    if choice == "local":
        return DaskTaskRunner(cluster_kwargs={"n_workers": os.cpu_count() or 1, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None})
    if not choice.startswith(("tcp://", "tls://", "inproc://")):
        raise ValueError(f"{DASK_ENV}={choice!r}: expected 'local' or a Dask scheduler address such as tcp://10.0.0.5:8786")
    return DaskTaskRunner(address=choice)


def failure_summary(flow, run, state) -> None:
    """Flow ``on_failure`` hook: a ``failure-summary`` markdown artifact (and ``FAILURE.md`` in the
    run's folder) that says which task failed and why, what finished, and how to go on."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run.id])))
    latest: dict[str, object] = {}
    for task_run in sorted(runs, key=lambda r: r.expected_start_time or r.created):
        latest[task_run.name] = task_run  # the last attempt of each task
    failed = [r for r in latest.values() if r.state is not None and (r.state.is_failed() or r.state.is_crashed())]
    done = sorted(r.name for r in latest.values() if r.state is not None and r.state.is_completed())
    message = (state.message or "").strip()
    lines = [f"# {flow.name} failed: {run.name}", "", f"- flow run: `{run.id}`", f"- state: {state.name}"]
    if message:
        lines.append(f"- message: {message.splitlines()[0]}")
    lines += ["", "## Failed", ""]
    lines += [f"- `{r.name}`: {(r.state.message or r.state.name).strip().splitlines()[0]}" for r in failed] or ["- (no task failed: the flow itself did)"]
    lines += ["", f"## Finished ({len(done)})", "", *[f"- `{name}`" for name in done]]
    lines += ["", "## What next", "",
              "Fix the cause above, then press **Retry** on this flow run (or `prefect flow-run retry "
              f"{run.id}`): the finished tasks come back Cached from the object store and the run goes on "
              "at the failed task. A bad spec or bad data is not retried by itself; a store outage is, "
              "with backoff, before the run fails."]
    markdown = "\n".join(lines) + "\n"
    create_markdown_artifact(key="failure-summary", markdown=markdown, description=f"Why {run.name} failed")
    try:
        folder = run_folder(run=run)[2]
        if folder.is_dir():
            atomic_write_text(folder / "FAILURE.md", markdown)
    except OSError:
        pass  # the artifact is the summary; the folder copy is a convenience
