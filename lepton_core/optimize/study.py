"""The optimisation loop: a seeded Optuna study over serving configurations, each trial one
measurement, the objective the cost of a million predictions at the latency SLO.

The first trial is the baseline (eager fp32, one request per forward pass, all cores), so every
study says how much better its choice is than serving as it was; the next are
``space.first_guesses``. Then a TPE sampler (seeded, multivariate, over the conditional space of
``space.propose``: a precision among those its runtime serves here, and so on) proposes
configurations. The combinations this machine cannot run are left out of the space and named once
(``StudyResult.extra["not_searched"]``); a configuration that fails to start anyway, or that breaks
the accuracy tolerance or the SLO, is a trial with its reason, marked infeasible for the sampler
(Optuna's constraints), never a crash.
A configuration proposed again is not measured again: the earlier measurement is reused.

The loop stops when the best has not improved (by ``min_improvement``, relative) for
``patience`` measured trials, or ``trials`` measurements are spent, or ``time_budget_s`` has
passed. The study lives in an Optuna journal file: a run that is retried or started again with
the same file continues the study, and a trial that an interrupted run left running is measured
again.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lepton_core.errors import UsageError
from lepton_core.optimize.harness import SKIPPED, Measurement
from lepton_core.optimize.space import Candidate, Placement, baseline, combinations, first_guesses, params, place, propose


@dataclass(frozen=True)
class StudySettings:
    trials: int = 12  # measurements at most (skipped configurations are not measurements)
    patience: int = 5  # stop when the best has not improved for this many measurements
    min_improvement: float = 0.02  # a relative drop in cost that counts as improving
    time_budget_s: float = 0.0  # stop starting trials after this many seconds (0: no limit)
    seed: int = 0
    startup_trials: int = 4  # random proposals before TPE models the results

    def __post_init__(self) -> None:
        if self.trials < 1 or self.patience < 1 or self.startup_trials < 0 or self.time_budget_s < 0:
            raise UsageError("optimisation: trials and patience must be at least 1, the time budget not negative")


@dataclass
class Trial:
    number: int
    measurement: Measurement
    placement: Placement | None
    reused_from: int | None = None

    @property
    def cost(self) -> float | None:
        return self.placement.usd_per_million if self.placement else None

    def record(self) -> dict:
        return {"number": self.number, "measurement": self.measurement.record(),
                "placement": asdict(self.placement) if self.placement else None, "reused_from": self.reused_from}


@dataclass
class StudyResult:
    trials: list[Trial]
    stopped: str  # why the loop ended
    baseline: Trial | None = None
    best: Trial | None = None
    resumed: int = 0  # trials that were already in the study when this run began
    extra: dict = field(default_factory=dict)

    def pareto(self) -> list[Trial]:
        """Measured trials that no other beats on both cost and p95 latency, cheapest first."""
        ok = [t for t in self.trials if t.placement and t.reused_from is None]
        front = [t for t in ok if not any(
            (o.cost <= t.cost and o.measurement.latency_ms["p95"] <= t.measurement.latency_ms["p95"])
            and (o.cost < t.cost or o.measurement.latency_ms["p95"] < t.measurement.latency_ms["p95"]) for o in ok)]
        return sorted(front, key=lambda t: t.cost)

    def record(self) -> dict:
        return {"stopped": self.stopped, "resumed": self.resumed, "baseline": self.baseline.number if self.baseline else None,
                "best": self.best.number if self.best else None, "pareto": [t.number for t in self.pareto()],
                "trials": [t.record() for t in self.trials], **self.extra}


def _storage(path: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _trial_from(frozen, catalogue, gpu: bool) -> Trial:
    m = Measurement.from_record(frozen.user_attrs["measurement"])
    placement = place(m.rate_rps, m.cores_used, m.peak_memory_mb or 0.0, gpu, catalogue) if m.ok else None
    return Trial(frozen.number, m, placement, frozen.user_attrs.get("reused_from"))


def run_study(name: str, storage_path: str | Path, measure: Callable[[Candidate], Measurement], catalogue, *,
              device: str, cores: int, settings: StudySettings,
              say: Callable[[str], None] | None = None, say_trials: bool = True) -> StudyResult:
    """Run (or continue) the study ``name`` in the journal file ``storage_path``; ``measure`` turns a
    configuration into a Measurement (the flow makes each call its own Prefect task).

    ``say`` gets the study's progress: what is resumed, what is not searched and, unless
    ``say_trials`` is false (where ``measure`` reports each measurement itself), a line before and
    after each trial."""
    import optuna
    from optuna.trial import TrialState

    say = say or (lambda _m: None)
    say_trial = say if say_trials else (lambda _m: None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    gpu = device.startswith("cuda")
    runnable, left_out = combinations(device, cores)
    if "eager" not in runnable:  # eager fp32, the baseline, runs wherever anything does
        raise UsageError(f"optimisation: nothing can serve on {device} here: {left_out.get('eager, fp32', 'unknown reason')}")
    # group: the conditional space's branches modelled apart (precision[onnx] only where runtime is onnx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # `group`'s, in every run's log
        sampler = optuna.samplers.TPESampler(seed=settings.seed, multivariate=True, group=True,
                                             n_startup_trials=settings.startup_trials)
    study = optuna.create_study(study_name=name, storage=_storage(Path(storage_path)), sampler=sampler,
                                direction="minimize", load_if_exists=True)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if frozen.state == TrialState.RUNNING:  # left by an interrupted run: measure it again
            # (what it was asked to be: enqueued, or as far as it was proposed)
            study.enqueue_trial({**frozen.system_attrs.get("fixed_params", {}), **frozen.params}, skip_if_exists=False)
            study.tell(frozen.number, state=TrialState.FAIL)
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "measurement" in t.user_attrs]
    trials = [_trial_from(t, catalogue, gpu) for t in done]
    resumed = len(trials)
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial(params(baseline(cores), runnable, cores))  # trial 0: what the study is measured against
        for guess in first_guesses(device, cores):
            if guess.channels_last in runnable.get(guess.runtime, {}).get(guess.precision, ()):
                study.enqueue_trial(params(guess, runnable, cores))
    if resumed:
        say(f"continuing study {name}: {resumed} trials already measured")
    if left_out:
        say(f"not searched: {len(left_out)} combinations of runtime, precision and memory format that cannot run here "
            f"({'; '.join(sorted(set(left_out.values())))}); nor more threads in all than the {cores} cores")
    elif cores > 1:
        say(f"not searched: more threads in all (threads per worker x workers) than the {cores} cores")

    def measured() -> list[Trial]:
        return [t for t in trials if t.reused_from is None and t.measurement.status != SKIPPED]

    def stale() -> int:
        """Measurements since the best last improved by min_improvement."""
        best, since = None, 0
        for t in measured():
            if t.cost is not None and (best is None or t.cost < best * (1 - settings.min_improvement)):
                best, since = t.cost, 0
            else:
                since += 1
        return since

    started, stopped, asks = time.monotonic(), "", 0
    while True:
        if len(measured()) >= settings.trials:
            stopped = f"the budget of {settings.trials} measurements is spent"
            break
        if any(t.cost is not None for t in measured()) and stale() >= settings.patience:
            stopped = f"the best has not improved for {settings.patience} measurements"
            break
        if settings.time_budget_s and time.monotonic() - started > settings.time_budget_s:
            stopped = f"the time budget of {settings.time_budget_s:g} s is spent"
            break
        if asks >= 8 * settings.trials + len(trials):
            stopped = "the sampler keeps proposing configurations already tried or not runnable here"
            break
        asks += 1
        trial = study.ask()
        candidate = propose(trial, device, cores, runnable).canonical()
        earlier = next((t for t in trials if t.measurement.candidate == candidate and t.reused_from is None), None)
        if earlier is not None:
            m, reused = earlier.measurement, earlier.number
        else:
            say_trial(f"trial {trial.number}: {candidate.label()}")
            m, reused = measure(candidate), None
        placement = place(m.rate_rps, m.cores_used, m.peak_memory_mb or 0.0, gpu, catalogue) if m.ok else None
        t = Trial(trial.number, m, placement, reused)
        trial.set_user_attr("measurement", json.loads(json.dumps(m.record())))
        if reused is not None:
            trial.set_user_attr("reused_from", reused)
        feasible = placement is not None
        trial.set_constraint("runs-within-slo-and-tolerance", 0.0 if feasible else 1.0)
        # An infeasible trial still needs a value: the worst cost seen, so TPE learns nothing good from it.
        worst = max([x.cost for x in trials if x.cost is not None] + [placement.usd_per_million if feasible else 1.0])
        study.tell(trial, placement.usd_per_million if feasible else worst)
        trials.append(t)
        if reused is None:
            say_trial(f"trial {trial.number}: " + (f"{m.rate_rps:g} req/s at p95 {m.latency_ms['p95']:.1f} ms, "
                                                   f"${placement.usd_per_million:.4f} per million on {placement.replicas} x "
                                                   f"{placement.instance}" if feasible else f"{m.status}: {m.reason}"))
    feasible = [t for t in trials if t.cost is not None]
    best = min(feasible, key=lambda t: (t.cost, t.number)) if feasible else None
    base = next((t for t in trials if t.measurement.candidate == baseline(cores) and t.reused_from is None), None)
    return StudyResult(trials, stopped, base, best, resumed, extra={"not_searched": left_out})
