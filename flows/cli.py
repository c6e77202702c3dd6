"""The ``lepton`` command: the entry point that runs the flows.

Imports here are light so that ``lepton --help`` answers at once; each command imports what it
needs (Prefect, torch, boto3) when it runs."""

from __future__ import annotations

import enum
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lepton_core.errors import LeptonError

app = typer.Typer(
    name="lepton", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="markdown",
    help="Move an AI system (its data, models and services) from on-prem machines to a cloud.",
)
store_app = typer.Typer(no_args_is_help=True, help="The embedded S3 server (SeaweedFS on 127.0.0.1).")
app.add_typer(store_app, name="store")


def _fail(message: str, code: int) -> None:
    for line in message.splitlines() or [""]:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show LeptonErrors as ``error: ...`` with their exit code, never a traceback. A file the
    machine would not read or write: its name and the reason, exit code 1. Anything else is a
    bug: one line too, with the traceback when LEPTON_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LeptonError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except typer.Exit:
            raise
        except Exception as exc:
            if os.environ.get("LEPTON_DEBUG"):
                raise
            if isinstance(exc, OSError) and exc.filename:  # the machine's: a full disk, a read-only folder, a file in the way
                _fail(f"{exc.filename}: {exc.strerror or exc}", 1)
            _fail(f"unexpected {type(exc).__name__}: {exc} (set LEPTON_DEBUG=1 for the traceback)", 1)

    return wrapper


@app.command("check-spec")
@guarded
def check_spec(spec: Annotated[Path, typer.Argument(help="The spec YAML file.")]) -> None:
    """Check a spec file; exit code 2 with one line per problem when it is not valid."""
    from lepton_core.spec import load_spec

    loaded = load_spec(spec)
    s = loaded.spec
    typer.echo(f"ok: {spec}: {s.name}: {len(s.datasets)} datasets, {len(s.services)} services, "
               f"model {s.model.architecture if s.model else 'none'}, target s3://{s.target.bucket}/{s.target.prefix} "
               f"({s.target.endpoint_url or 'AWS S3'}), "
               + (f"cloud chosen from {len(loaded.candidates)} candidates (`lepton compare-clouds`)" if loaded.cloud_open else
                  f"catalogue {loaded.catalogue.name} as of {loaded.catalogue.as_of}"))


@app.command()
@guarded
def sample(
    dest: Annotated[Path, typer.Argument(help="Folder to write the demo into (missing or empty).")],
    seed: Annotated[int, typer.Option(min=0, help="Seed: the same seed writes the same data.")] = 0,
    epochs: Annotated[int, typer.Option(min=1, max=100, help="Epochs to train the on-prem model.")] = 4,
    model: Annotated[bool, typer.Option("--model/--no-model", help="Train the on-prem model (about a minute).")] = True,
    force: Annotated[bool, typer.Option(help="Replace DEST if it is not empty.")] = False,
) -> None:
    """Write the bundled demo: digits in two domains, a table, a trained model, services, a spec."""
    from lepton_core.demo.sample import build_sample
    from lepton_core.fsutil import writable_dir

    writable_dir(dest.expanduser().absolute().parent, "DEST's folder")
    spec = build_sample(dest, seed=seed, epochs=epochs, train_model=model, force=force, progress=typer.echo)
    typer.echo(f"demo written; its spec: {spec}")


@app.command()
@guarded
def run(
    spec: Annotated[Optional[Path], typer.Argument(help="The spec YAML; the bundled demo when left out.")] = None,
    bucket: Annotated[Optional[str], typer.Option(help="Override the target bucket.")] = None,
    prefix: Annotated[Optional[str], typer.Option(help="Override the target key prefix.")] = None,
    endpoint_url: Annotated[Optional[str], typer.Option(help="Override the S3 endpoint ('embedded' or a URL).")] = None,
    plan_seconds: Annotated[float, typer.Option(min=0, max=3600, help="Seconds the exact planner may search (0: heuristics only).")] = 30.0,
    adapt_epochs: Annotated[int, typer.Option(min=1, max=10000, help="Epochs at most to adapt the model to the cloud's data.")] = 10,
    parity_images: Annotated[Optional[int], typer.Option(min=10, max=100_000, help="Test images of each domain (on-prem, cloud) the parity check sends to both servers (200 by default).")] = None,
    optimize_trials: Annotated[int, typer.Option(min=0, max=500, help="Serving configurations to measure after integration (0: skip tuning).")] = 6,
) -> None:
    """Run the whole migration flow on a spec (the bundled demo when none is given)."""
    from lepton_core.spec import load_spec
    from lepton_core.spec.params import AdaptOptions, IntegrateOptions, OptimizeOptions, PlanOptions, SpecRef, TargetOverrides

    overrides = TargetOverrides(bucket=bucket, prefix=prefix, endpoint_url=endpoint_url)
    if spec is not None:  # fail fast, before Prefect starts, on a bad spec or override, or a bad on-prem checkpoint
        from lepton_core.transfer.adapt import check_local_onprem

        loaded = load_spec(spec)
        overrides.apply(loaded.spec)
        check_local_onprem(loaded)
    from flows.migrate import migrate

    report = migrate(spec=SpecRef(path=str(spec.resolve()) if spec else None), target=overrides,
                     planning=PlanOptions(exact_seconds=plan_seconds), adapting=AdaptOptions(max_epochs=adapt_epochs),
                     integrating=IntegrateOptions(**({"golden_per_domain": parity_images} if parity_images else {})),
                     optimizing=OptimizeOptions(enabled=optimize_trials > 0, trials=max(1, optimize_trials)))
    typer.echo(f"migration finished; report: {report}")
    from lepton_core.state import store_dir
    from lepton_core.store import EmbeddedStore

    status = EmbeddedStore(store_dir()).status()
    if status.running:
        typer.echo(f"the embedded object store is still running at {status.endpoint_url}; `lepton store down` stops it")


def _settled_spec(spec: Path):
    """The spec, on the cloud its migration moved to when its provider is 'auto' (the recorded choice)."""
    from lepton_core.choice.record import settled
    from lepton_core.spec import load_spec

    return settled(load_spec(spec))


def _selected(requested: list[str] | None, known: list[str], spec: Path, kind: str) -> list[str]:
    """The datasets a command works on: those named with --dataset (each must exist), else all."""
    from lepton_core.errors import UsageError

    for name in requested or []:
        if name not in known:
            raise UsageError(f"--dataset {name}: no {kind} of that name in {spec} (known: {', '.join(known)})")
    return list(requested or known)


class Side(str, enum.Enum):
    source = "source"
    target = "target"


@app.command()
@guarded
def validate(
    spec: Annotated[Path, typer.Argument(help="The spec YAML file.")],
    dataset: Annotated[Optional[list[str]], typer.Option(help="Only this dataset (repeatable); all when left out.")] = None,
    side: Annotated[Side, typer.Option(help="source: the data where it is now; target: its cloud copy.")] = Side.source,
) -> None:
    """Run a validation gate (Great Expectations) on the spec's local datasets or their cloud copies.

    Writes each gate's Data Docs (and, for the source, each dataset's profile) into a run folder
    under the lepton home, and on the source side reports the drift between the datasets the
    spec compares. Exit code 2 when a dataset fails, with the expectation and up to ten examples."""
    import datetime as dt

    from lepton_core.spec import is_s3
    from lepton_core.state import runs_dir, state_dir
    from lepton_core.validation.drift import comparisons, drift_gate, drift_report
    from lepton_core.validation.gate import validate_local
    from lepton_core.validation.outputs import docs_dir, save_profile
    from lepton_core.validation.parity import validate_target

    loaded = _settled_spec(spec)
    run_dir = runs_dir() / f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-validate-{side.value}"
    profiles = {}
    for name in _selected(dataset, [d.name for d in loaded.spec.datasets if not is_s3(d.location)], spec, "local dataset"):
        if side is Side.source:
            result = validate_local(loaded, name, "source", docs_dir(run_dir, "source", name))
            profiles[name] = result.profile
            save_profile(run_dir, name, result.profile)
        else:
            result = validate_target(loaded, name, state_dir(), docs_dir(run_dir, "target", name))
        typer.echo(f"{name}: {len(result.checks)} expectations passed on {result.rows_text()} in {result.seconds:.1f} s")
    for pair in comparisons(loaded.spec, profiles):
        report = drift_report(*pair)
        typer.echo(f"drift: {report.summary()}")
        drift_gate(report, docs_dir(run_dir, "drift", report.dataset))
    typer.echo(f"Data Docs: {run_dir / 'data-docs'}")


class Method(str, enum.Enum):
    lift_shift = "lift-shift"
    waves = "waves"
    greedy = "greedy"
    ppo = "ppo"
    exact = "exact"
    all = "all"


@app.command()
@guarded
def plan(
    spec: Annotated[Path, typer.Argument(help="The spec YAML file.")],
    method: Annotated[Method, typer.Option(help="How to plan: a yardstick heuristic, the trained PPO planner, the exact planner (CP-SAT), or all of them side by side.")] = Method.greedy,
    link: Annotated[Optional[str], typer.Option(help="The catalogue's network link to move data over (its first by default).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the link's hour-by-hour bandwidth.")] = 0,
    time_limit: Annotated[float, typer.Option(min=0.1, max=3600, help="Seconds the exact planner may search before it returns its best plan and bound.")] = 60.0,
    policy: Annotated[Optional[Path], typer.Option(help="The trained planner's policy.pt (default: the one `lepton train-planner` wrote; --method all uses it when it exists).")] = None,
    chart: Annotated[Optional[Path], typer.Option(help="Write a Gantt chart of the plan (the cheapest, with --method all) to this PNG file.")] = None,
    cloud: Annotated[Optional[str], typer.Option(help="Plan on this one of the spec's cloud_choice.candidates (default: the target's catalogue; with provider auto, the cloud the migration chose, or the first candidate before one has).")] = None,
) -> None:
    """Plan the migration of the spec's services in the simulator and print the plan and its cost."""
    from lepton_core.choice.record import settled
    from lepton_core.sim.plan import cheapest, compare, comparison_lines, cost_lower_bound, make_plan, plan_lines
    from lepton_core.sim.scenario import from_spec
    from lepton_core.spec import load_spec

    loaded = load_spec(spec)
    if cloud is None:  # on the cloud the migration moved to, as its flow plans
        loaded = settled(loaded, required=False)
    scenario = from_spec(loaded, link=link, seed=seed, catalogue=loaded.candidate(cloud) if cloud else None)
    if chart:
        _check_output_file(chart, "--chart")
    from lepton_core.planner.planner import find_policy

    agent = find_policy(policy, required=method is Method.ppo or policy is not None)
    if method is Method.all:
        plans = compare(scenario, time_limit_s=time_limit, policy=agent)
        chosen = cheapest(plans)
        typer.echo(f"{len(plans)} plans for {scenario.n} workloads over {scenario.horizon} h:")
        for line in comparison_lines(plans, floor=cost_lower_bound(scenario)):
            typer.echo(line)
    else:
        chosen = make_plan(scenario, method.value, time_limit_s=time_limit, policy=agent)
    for line in plan_lines(chosen, scenario):
        typer.echo(line)
    if chart:
        from lepton_core.sim.chart import gantt_png

        typer.echo(f"chart: {gantt_png(chosen, chart)}")


class Objective(str, enum.Enum):
    total_cost = "total_cost"
    time_under_budget = "time_under_budget"


@app.command("compare-clouds")
@guarded
def compare_clouds_cmd(
    spec: Annotated[Path, typer.Argument(help="The spec YAML file.")],
    candidate: Annotated[Optional[list[str]], typer.Option("--candidate", help="Compare only this one of the spec's cloud_choice.candidates (repeat for more).")] = None,
    objective: Annotated[Optional[Objective], typer.Option(help="Rank by this instead of the spec's cloud_choice.objective.")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the links' hour-by-hour bandwidth.")] = 0,
    policy: Annotated[Optional[Path], typer.Option(help="The trained planner's policy.pt (default: the one `lepton train-planner` wrote, when it exists).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder to write comparison.json, comparison.txt and the bar chart clouds.png into.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON instead of a table.")] = False,
) -> None:
    """Plan and price the spec's migration on every candidate cloud and region, rank them by the
    spec's objective, and recommend one with its margin to the runner-up."""
    import json

    from lepton_core.choice.compare import compare_clouds, comparison_lines
    from lepton_core.planner.planner import find_policy
    from lepton_core.spec import load_spec

    loaded = load_spec(spec)
    if out is not None:
        from lepton_core.fsutil import writable_dir

        writable_dir(out, "--out")
    agent = find_policy(policy, required=policy is not None)
    comparison = compare_clouds(loaded, refs=candidate, objective=objective.value if objective else None, policy=agent, seed=seed,
                                progress=None if as_json else lambda o: typer.echo(f"planned {o.catalogue}: {o.method}", err=True))
    lines = comparison_lines(comparison)
    if out is not None:
        from lepton_core.choice.chart import comparison_png
        from lepton_core.fsutil import atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "comparison.json", json.dumps(comparison.to_dict(), indent=2))
        atomic_write_text(out / "comparison.txt", "\n".join(lines) + "\n")
        lines.append(f"written: {out / 'comparison.json'}, {out / 'comparison.txt'}, {comparison_png(comparison, out / 'clouds.png')}")
    from lepton_core.choice.record import read_record

    record = read_record(loaded) if loaded.cloud_open else None
    if record is not None:
        lines.append(f"this migration is bound to {record.chosen} (chosen by run {record.run}, {record.chosen_at}); "
                     f"delete {record.path} or pin target.provider to choose again")
    typer.echo(json.dumps(comparison.to_dict(), indent=2) if as_json else "\n".join(lines))
    if comparison.recommended is None:
        raise typer.Exit(1)


@app.command("train-planner")
@guarded
def train_planner_cmd(
    steps: Annotated[int, typer.Option(min=1000, help="Simulated hours to train for, all simulators together.")] = 200_000,
    envs: Annotated[int, typer.Option(min=1, max=65536, help="Simulators stepped together.")] = 64,
    max_workloads: Annotated[int, typer.Option(min=2, max=256, help="The largest system the policy will plan.")] = 16,
    min_workloads: Annotated[int, typer.Option(min=1, max=256, help="The smallest system drawn in training.")] = 4,
    hidden: Annotated[int, typer.Option(min=8, max=1024, help="Width of the policy's layers (with the lookahead, 128 and 256 planned no cheaper than 64; wider trains slower on CPUs and plans slower).")] = 64,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the training run: the initial weights, scenarios and samples.")] = 1,
    fresh: Annotated[bool, typer.Option(help="Start afresh instead of going on from a checkpoint of the same settings.")] = False,
) -> None:
    """Train the PPO migration planner on the simulator (the train-planner flow); plans then use it."""
    from lepton_core.errors import UsageError

    if min_workloads > max_workloads:  # before Prefect starts: bad input fails at once
        raise UsageError(f"--min-workloads {min_workloads} is larger than --max-workloads {max_workloads}")
    from flows.train_planner import train_planner_flow
    from lepton_core.spec.params import PlannerTraining

    result = train_planner_flow(PlannerTraining(total_timesteps=steps, num_envs=envs, max_workloads=max_workloads,
                                                min_workloads=min_workloads, hidden=hidden, seed=seed, fresh=fresh))
    if result["resumed_from"]:
        typer.echo(f"{result['went_on']} (--fresh starts over)")
    typer.echo(f"planner trained to {result['global_step']:,} steps; last mean episode cost ${result['final_cost']:,.2f}; "
               f"kept the snapshot of step {result['selected_step']:,} ({result['validation_saving']:+.2%} against the "
               "best heuristic on the validation systems)")
    typer.echo(f"policy: {result['policy']}; learning curve: {result['curve']}")


class _BarProgress:
    """A terminal progress bar for one dataset copy: files, bytes, rate and time left."""

    def __init__(self, bar, name: str) -> None:
        self._bar, self._name = bar, name
        self._files = 0
        self._task = None

    def start(self, files: int, nbytes: int) -> None:
        self._total_files = files
        self._task = self._bar.add_task(self._name, total=nbytes, files=f"0/{files} files")

    def advance(self, files: int, nbytes: int) -> None:
        self._files += files
        self._bar.update(self._task, advance=nbytes, files=f"{self._files}/{self._total_files} files")


@app.command("migrate-data")
@guarded
def migrate_data(
    spec: Annotated[Path, typer.Argument(help="The spec YAML file.")],
    dataset: Annotated[Optional[list[str]], typer.Option(help="Only this dataset (repeatable); all when left out.")] = None,
) -> None:
    """Copy the spec's datasets to its target: checksummed, verified, resumable; re-runs send only changes."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from lepton_core.data.stage import migrate_dataset
    from lepton_core.state import state_dir

    loaded = _settled_spec(spec)
    names = _selected(dataset, [d.name for d in loaded.spec.datasets], spec, "dataset")
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[files]}"), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    for name in names:
        with Progress(*columns) as bar:
            summary = migrate_dataset(loaded, name, state_dir(), _BarProgress(bar, name))
        typer.echo(summary.line())


class Runtime(str, enum.Enum):
    eager = "eager"
    compile = "compile"
    onnx = "onnx"


class Precision(str, enum.Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    int8 = "int8"


class Strategy(str, enum.Enum):
    head = "head"
    full = "full"
    gradual = "gradual"


class Init(str, enum.Enum):
    onprem = "onprem"
    imagenet = "imagenet"
    none = "none"


class AdaptData(str, enum.Enum):
    cloud_copy = "cloud-copy"
    location = "location"


@app.command()
@guarded
def adapt(
    spec: Annotated[Path, typer.Argument(help="The spec YAML file (it must name a model).")],
    strategy: Annotated[Strategy, typer.Option(help="head: the classifier (and batch-norm) only; full: every weight; gradual: thaw the backbone block by block.")] = Strategy.full,
    init: Annotated[Init, typer.Option(help="Initial weights: the on-prem checkpoint, torchvision's ImageNet weights (local file only), or none.")] = Init.onprem,
    weights: Annotated[Optional[Path], typer.Option(help="--init imagenet: the weights file (default: $TORCH_HOME/hub/checkpoints).")] = None,
    data: Annotated[AdaptData, typer.Option(help="cloud-copy: the migrated copy, verified against its manifest; location: where the spec says.")] = AdaptData.cloud_copy,
    labelled_fraction: Annotated[float, typer.Option(min=0.001, max=1.0, help="Share of the target's training labels to use.")] = 0.1,
    epochs: Annotated[int, typer.Option(min=1, max=10000, help="Epochs at most (early stopping may end sooner).")] = 10,
    batch_size: Annotated[int, typer.Option(min=1, max=65536, help="Images per training step.")] = 32,
    lr: Annotated[float, typer.Option(min=1e-7, max=1.0, help="AdamW's learning rate at the start.")] = 1e-3,
    scratch: Annotated[bool, typer.Option("--scratch/--no-scratch", help="Also train from scratch on the same labels and budget.")] = True,
    register: Annotated[bool, typer.Option("--register/--no-register", help="Upload the checkpoint and model card to the registry.")] = True,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the labelled subset, shuffling and weights.")] = 0,
    fresh: Annotated[bool, typer.Option(help="Discard checkpoints of an earlier run with the same settings.")] = False,
) -> None:
    """Adapt the spec's on-prem model to its target dataset (the adapt-model flow) and compare it with
    the model as it is and with one trained from scratch."""
    from lepton_core.spec import load_spec
    from lepton_core.spec.params import AdaptOptions, SpecRef

    from lepton_core.errors import UsageError

    loaded = load_spec(spec)  # fail fast, before Prefect starts
    model = loaded.spec.model
    if model is None:
        raise UsageError(f"{spec}: the spec has no model to adapt")
    if weights is not None and init is not Init.imagenet:
        raise UsageError(f"--weights is the weights file of --init imagenet, not of --init {init.value}")
    from lepton_core.transfer.adapt import check_local_onprem

    check_local_onprem(loaded)  # the on-prem checkpoint, whatever --init: it is the unadapted model compared
    if init is Init.imagenet:  # the weights file too
        from lepton_core.transfer.backbones import checked_pretrained

        checked_pretrained(model.architecture, len(model.classes), model.input_size, weights)
    options = AdaptOptions(strategy=strategy.value, init=init.value, pretrained_weights=str(weights) if weights else None,
                           data=data.value, labelled_fraction=labelled_fraction, max_epochs=epochs, batch_size=batch_size,
                           lr=lr, compare_scratch=scratch, register_model=register, seed=seed, fresh=fresh, progress_bar=True)
    from flows.adapt import adapt_model_flow

    result = adapt_model_flow(spec=SpecRef(path=str(spec.resolve())), adapting=options)
    for name, acc in result["accuracy"].items():
        typer.echo(f"{name}: target test accuracy {acc:.1%}")
    typer.echo(f"adapted checkpoint: {result['checkpoint']}")
    if result["registry_uri"]:
        typer.echo(f"registered: {result['registry_uri']} (version {result['version']})")


def _spec_store(spec: Optional[Path]):
    """The object store an s3:// URI given to `serve` lives in: the spec's target (its endpoint and
    credentials) when a spec is given, else boto3's chain."""
    from lepton_core.state import state_dir
    from lepton_core.store import ObjectStore, StoreSettings
    from lepton_core.store.target import open_store

    return open_store(_settled_spec(spec).spec.target, state_dir(), start=False) if spec is not None else ObjectStore(StoreSettings())


def _model_file(model: str, spec: Optional[Path]) -> tuple[Path, str, str]:
    """A lepton checkpoint to serve, with its name and version: a local file, or a registered
    version's s3:// URI (``.../MODEL/versions/VERSION/``), fetched and checked against its card."""
    from lepton_core.errors import UsageError

    if not model.startswith("s3://"):
        path = Path(model)
        if not path.is_file():
            raise UsageError(f"{model}: no such checkpoint file")
        return path, path.stem, "local"
    import re

    from lepton_core.registry import Registry
    from lepton_core.state import state_dir
    from lepton_core.store.objectstore import S3Uri

    uri = S3Uri.parse(model.rstrip("/").removesuffix("/model.pt"))
    m = re.fullmatch(r"(?:(.*)/)?([^/]+)/versions/([^/]+)", uri.key)
    if not m:
        raise UsageError(f"{model}: not a registered version (expected s3://BUCKET/ROOT/MODEL/versions/VERSION/)")
    store = _spec_store(spec)
    registry = Registry(store, uri.bucket, m.group(1) or "")
    version = registry.get(m.group(2), m.group(3))
    return registry.fetch(version, state_dir() / "cache" / "registry"), m.group(2), m.group(3)


def _calibration_file(value: str, spec: Optional[Path]) -> str:
    """int8's calibration images: a local .npy, or an s3:// URI (a cutover bundle's) fetched into the
    state folder's cache through the spec's target store (boto3's chain without a spec)."""
    import hashlib

    from lepton_core.errors import UsageError

    if not value.startswith("s3://"):
        if not Path(value).is_file():
            raise UsageError(f"--calibration {value}: no such file")
        return value
    from lepton_core.state import state_dir
    from lepton_core.store.objectstore import S3Uri

    uri = S3Uri.parse(value)
    store = _spec_store(spec)
    path = state_dir() / "cache" / "calibration" / f"{hashlib.sha256(value.encode()).hexdigest()[:16]}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(store.download_file(uri.bucket, uri.key, path))


def _check_calibration(path: str, input_size: int) -> None:
    """A clear error now, not a traceback in the server's worker: the file must be a .npy of
    preprocessed images of the model's size."""
    import numpy as np

    from lepton_core.errors import UsageError

    try:
        images = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise UsageError(f"--calibration {path}: not a .npy of images ({exc})") from None
    if images.ndim != 4 or images.shape[1:] != (3, input_size, input_size) or not len(images):
        raise UsageError(f"--calibration {path}: images of shape {images.shape}; the model needs (n, 3, {input_size}, {input_size})")


@app.command()
@guarded
def serve(
    model: Annotated[str, typer.Argument(help="A lepton checkpoint file, or a registered version's s3:// URI.")],
    spec: Annotated[Optional[Path], typer.Option(help="The spec whose target holds the registry (endpoint, credentials); boto3's chain when left out.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 keeps it on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1024, max=65535, help="Port to listen on (LitServe takes 1024-65535).")] = 8000,
    max_batch_size: Annotated[int, typer.Option(min=1, max=4096, help="Requests batched into one forward pass.")] = 8,
    batch_timeout: Annotated[float, typer.Option(min=0.0001, max=10, help="Seconds to wait to fill a batch (at 0 LitServe would busy-poll).")] = 0.005,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Model processes per device.")] = 1,
    runtime: Annotated[Runtime, typer.Option(help="eager PyTorch, torch.compile, or ONNX Runtime.")] = Runtime.eager,
    precision: Annotated[Precision, typer.Option(help="fp32; bf16 where the hardware has it; fp16 on a GPU; int8 (ONNX Runtime, CPU) with --calibration.")] = Precision.fp32,
    calibration: Annotated[Optional[str], typer.Option(help="int8: the calibration images (.npy, or the s3:// URI in a cutover bundle) it is quantized on.")] = None,
    channels_last: Annotated[bool, typer.Option("--channels-last/--no-channels-last", help="NHWC memory format for the convolutions.")] = False,
    threads: Annotated[int, typer.Option(min=0, max=1024, help="Threads per worker (0: the library's default).")] = 0,
    serving_config: Annotated[Optional[Path], typer.Option(help="A serving.json from `lepton optimize`: its configuration replaces the options above.")] = None,
) -> None:
    """Serve a model over HTTP: POST /predict, GET /health, GET /info (the same API on-prem and in the cloud)."""
    import dataclasses
    import json

    path, name, version = _model_file(model, spec)
    from lepton_core.errors import UsageError
    from lepton_core.serving.runtime import unsupported
    from lepton_core.serving.server import ServeConfig
    from lepton_core.serving.server import main as serve_main
    from lepton_core.transfer.checkpoint import load_checkpoint

    load_checkpoint(path)  # a clear error now, not in a worker process
    if serving_config is not None:
        try:
            chosen = json.loads(serving_config.read_text())["serving"]
            known = {f.name for f in dataclasses.fields(ServeConfig)}
            config = ServeConfig(**{k: v for k, v in chosen.items() if k in known})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"--serving-config {serving_config}: not a lepton serving.json ({exc})") from None
    else:
        if precision is Precision.int8 and not calibration:
            raise UsageError("--precision int8 needs --calibration (the .npy of images it is quantized on; `lepton optimize` writes one)")
        config = ServeConfig(max_batch_size=max_batch_size, batch_timeout=batch_timeout, workers=workers, threads=threads,
                             runtime=runtime.value, precision=precision.value, channels_last=channels_last,
                             calibration=calibration or "")
    if config.precision == "int8":
        config = dataclasses.replace(config, calibration=_calibration_file(config.calibration, spec))
        _check_calibration(config.calibration, load_checkpoint(path)[1].input_size)
    import torch

    reason = unsupported(config.runtime, config.precision, config.channels_last, "cuda" if torch.cuda.is_available() else "cpu")
    if reason:
        raise UsageError(f"cannot serve {config.runtime} {config.precision} here: {reason}")
    _check_listen(host, port)
    typer.echo(f"serving {name} {version} on http://{host}:{port} (POST /predict, GET /health, GET /info); Ctrl-C stops")
    serve_main(["--checkpoint", str(path), "--host", host, "--port", str(port), "--name", name, "--version", version,
                "--config", json.dumps(config.__dict__)])


def _check_output_file(path: Path, option: str) -> None:
    """A UsageError now, before the work, when ``path`` cannot be written: a folder, or in a folder
    that cannot be made or written to."""
    from lepton_core.errors import UsageError
    from lepton_core.fsutil import writable_dir

    if path.is_dir():
        raise UsageError(f"{option} {path}: a folder, not a file")
    writable_dir(path.expanduser().absolute().parent, f"{option} {path}: its folder")


def _check_listen(host: str, port: int) -> None:
    """A UsageError now, before the model loads, when the server could not listen on ``host:port``
    (the port held by another process, an address not this machine's)."""
    import socket

    from lepton_core.errors import UsageError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server's own socket does
            s.bind(infos[0][4])
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another --port or --host)") from None


@app.command()
@guarded
def optimize(
    model: Annotated[Optional[str], typer.Argument(help="A registered version (name or s3:// URI) or a checkpoint file; default: the version holding candidate.")] = None,
    spec: Annotated[Optional[Path], typer.Option(help="The spec: its model, evaluation data, SLO and catalogue (the bundled demo when left out).")] = None,
    trials: Annotated[int, typer.Option(min=1, max=500, help="Configurations to measure at most.")] = 12,
    patience: Annotated[int, typer.Option(min=1, max=500, help="Stop when the best has not improved for this many trials.")] = 5,
    minutes: Annotated[float, typer.Option(min=0, max=10080, help="Start no trial after this many minutes (0: no limit).")] = 0,
    step_seconds: Annotated[float, typer.Option(min=0.5, max=600, help="Seconds of load at each request rate.")] = 2.0,
    arrivals: Annotated[str, typer.Option(help="How the load's requests are spaced: poisson (independent users) or constant.")] = "poisson",
    tolerance: Annotated[float, typer.Option(min=0, max=100, help="Accuracy points a configuration may lose against fp32.")] = 0.5,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(min=0, help="Seed of the search and of the load's Poisson arrivals.")] = 0,
    fresh: Annotated[bool, typer.Option(help="Start a new study instead of continuing this model's.")] = False,
) -> None:
    """Find the serving configuration that meets the spec's latency SLO at the least cost per
    prediction (the optimize-serving flow), and write it into the version's cutover bundle."""
    from lepton_core.errors import UsageError
    from lepton_core.spec import load_spec
    from lepton_core.spec.params import OptimizeOptions, SpecRef

    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {device}: one of auto, cpu, cuda")
    if arrivals not in ("poisson", "constant"):
        raise UsageError(f"--arrivals {arrivals}: one of poisson, constant")
    if spec is not None:
        load_spec(spec)  # fail fast, before Prefect starts
    options = OptimizeOptions(trials=trials, patience=patience, time_budget_minutes=minutes, step_seconds=step_seconds,
                              arrivals=arrivals, accuracy_tolerance=tolerance, device=device, seed=seed, fresh=fresh)
    from flows.optimize import optimize_serving_flow

    result = optimize_serving_flow(spec=SpecRef(path=str(spec.resolve()) if spec else None), model=model, optimizing=options)
    typer.echo(result["summary"])
    if result["bundle_uri"]:
        typer.echo(f"cutover bundle updated: {result['bundle_uri']}")


registry_app = typer.Typer(no_args_is_help=True, help="The model registry under the spec's target.")
app.add_typer(registry_app, name="registry")


def _registry(spec: Path):
    from lepton_core.registry import Registry
    from lepton_core.state import state_dir
    from lepton_core.store.target import open_store

    loaded = _settled_spec(spec)
    if loaded.spec.model is None:
        from lepton_core.errors import UsageError

        raise UsageError(f"{spec}: the spec has no model")
    return loaded.spec.model.name, Registry.for_target(loaded.spec.target, open_store(loaded.spec.target, state_dir(), start=True))


@registry_app.command("list")
@guarded
def registry_list(spec: Annotated[Path, typer.Argument(help="The spec YAML file.")]) -> None:
    """The spec's model's versions and which holds each stage."""
    from lepton_core.registry import STAGES

    name, registry = _registry(spec)
    versions = registry.versions(name)
    if not versions:
        typer.echo(f"no version of {name} in {registry.model_uri(name)} yet (the adapt stage registers one)")
        return
    stages = {s: registry.stage(name, s) for s in STAGES}
    rows = [("version", "created", "kind", "target accuracy", "stages")]
    for v in versions:
        acc = v.card.get("metrics", {}).get("adapted", {}).get("accuracy")
        rows.append((v.version, v.card.get("created_at", "")[:19], v.card.get("kind", "adapted"),
                     f"{acc:.1%}" if acc is not None else "-",
                     ", ".join(s for s, p in stages.items() if p and p.version == v.version) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        typer.echo("  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]))


@registry_app.command("promote")
@guarded
def registry_promote(
    spec: Annotated[Path, typer.Argument(help="The spec YAML file.")],
    version: Annotated[str, typer.Argument(help="The version to promote.")],
    stage: Annotated[str, typer.Argument(help="candidate or production.")],
    expect: Annotated[Optional[str], typer.Option(help="Only if the stage holds this version now ('none': only if empty).")] = None,
) -> None:
    """Make VERSION hold STAGE, atomically: a concurrent promotion cannot be overwritten unseen."""
    name, registry = _registry(spec)
    kwargs = {} if expect is None else {"expected": None if expect == "none" else expect}
    pointer = registry.promote(name, version, stage, **kwargs)
    typer.echo(f"{name}: {stage} is {pointer.version} (was {pointer.previous or 'no version'})")


@store_app.command("up")
@guarded
def store_up() -> None:
    """Start the embedded S3 server (or reuse the one running) and print its endpoint."""
    from lepton_core.state import store_dir
    from lepton_core.store import EmbeddedStore

    for line in EmbeddedStore(store_dir()).up().lines():
        typer.echo(line)


@store_app.command("down")
@guarded
def store_down() -> None:
    """Stop the embedded S3 server that lepton started; its data stays."""
    from lepton_core.state import store_dir
    from lepton_core.store import EmbeddedStore

    typer.echo("embedded store stopped" if EmbeddedStore(store_dir()).down() else "embedded store was not running")


@store_app.command("status")
@guarded
def store_status() -> None:
    """Show whether the embedded S3 server runs, its endpoint and access key id (never the secret)."""
    from lepton_core.state import store_dir
    from lepton_core.store import EmbeddedStore

    for line in EmbeddedStore(store_dir()).status().lines():
        typer.echo(line)


def main() -> None:
    # Prefect's telemetry would try to reach the internet from every run; users opt in explicitly.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary API of a run without PREFECT_API_URL must set up its database first: on a fresh
    # install on two busy cores that took longer than Prefect's 20 s (a clean-clone CI run failed so).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    app(prog_name="lepton")


if __name__ == "__main__":
    sys.exit(main())
