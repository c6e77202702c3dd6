"""The optimisation loop's parts that need no server: the rate search, pricing a measured
configuration on the catalogue, what a machine cannot run, and the study (with a measurement
function standing in for the harness, whose real measurements are tested in tests/serving)."""

from __future__ import annotations

import math

import pytest

from lepton_core.optimize.harness import OK, REJECTED, SKIPPED, HarnessSettings, Measurement, rate_at_slo
from lepton_core.optimize.space import Candidate, baseline, combinations, params, place, propose, space, threads_for
from lepton_core.optimize.study import StudySettings, run_study
from lepton_core.serving.runtime import unsupported
from lepton_core.spec.catalogue import Catalogue, InstanceType


def _step(capacity: float, slo: float):
    """A server whose p95 is 10 ms below ``capacity`` requests/s and explodes above it."""
    calls = []

    def step(rate: float) -> dict:
        calls.append(rate)
        p95 = 10.0 if rate <= capacity else 10.0 * rate / capacity * 100
        return {"offered_rps": rate, "ok": 100, "errors": 0, "latency_ms": {"p50": p95 / 2, "p95": p95, "p99": p95}}

    return step, calls


def test_rate_search_finds_the_capacity_within_ten_percent():
    settings = HarnessSettings(slo_p95_ms=50, max_steps=12)
    step, calls = _step(capacity=137.0, slo=50)
    rate, best, steps = rate_at_slo(step, 10.0, settings)
    assert 137.0 / 1.1 <= rate <= 137.0
    assert best["offered_rps"] == rate and best["passed"]
    assert calls[:5] == [10.0, 20.0, 40.0, 80.0, 160.0]  # doubles while it passes
    assert len(steps) <= 12


def test_rate_search_halves_from_a_start_above_capacity_and_gives_zero_when_nothing_passes():
    settings = HarnessSettings(slo_p95_ms=50, max_steps=12, min_rate=1.0)
    step, calls = _step(capacity=30.0, slo=50)
    rate, _, _ = rate_at_slo(step, 200.0, settings)
    assert calls[:4] == [200.0, 200.0, 100.0, 50.0] and 30 / 1.1 <= rate <= 30  # the first rate failed twice
    never, _ = _step(capacity=0.1, slo=50)
    rate, best, steps = rate_at_slo(never, 8.0, settings)
    assert rate == 0.0 and best is None and [s["offered_rps"] for s in steps] == [8.0, 8.0, 4.0, 2.0, 1.0]


def test_a_stall_in_the_first_step_does_not_cap_the_rate():
    """One slow first step (a host's stall) would otherwise send the search below its first rate for
    good: here 10 requests/s against a capacity of 137."""
    settings = HarnessSettings(slo_p95_ms=50, max_steps=12)
    step, calls = _step(capacity=137.0, slo=50)

    def stalled_once(rate: float) -> dict:
        out = step(rate)
        if len(calls) == 1:
            out["latency_ms"] = {"p50": 20.0, "p95": 900.0, "p99": 900.0}
        return out

    rate, best, steps = rate_at_slo(stalled_once, 10.0, settings)
    assert [s["passed"] for s in steps[:2]] == [False, True] and calls[:3] == [10.0, 10.0, 20.0]
    assert 137.0 / 1.1 <= rate <= 137.0 and best["passed"]


def _catalogue() -> Catalogue:
    def it(name, vcpu, mem, price, gpu=0):
        return InstanceType(name=name, family="gpu" if gpu else "compute", vcpu=vcpu, memory_gb=mem, gpu=gpu,
                            price_per_hour=price)

    return Catalogue(provider="aws", region="r1", as_of="2026-11-01", sources=("hand-written",), storage_gb_month=0.02,
                     transfer_in_per_gb=0, transfer_out_per_gb=0.09,
                     instances=(it("small", 2, 4, 0.085), it("big", 16, 32, 0.80), it("roomy", 2, 8, 0.096),
                                it("gpu1", 4, 16, 1.0, gpu=1)))


def test_place_prices_replicas_by_cores_and_memory():
    cat = _catalogue()
    p = place(50.0, 2, 500.0, False, cat)
    # small: one replica at $0.085/h; big: 8 replicas at $0.80/h (0.10/replica-h): small is cheaper
    assert (p.instance, p.replicas) == ("small", 1)
    assert p.usd_per_million == pytest.approx(0.085 / (50 * 3600) * 1e6, rel=1e-5)
    # 4 GB of resident memory does not fit small's 4 GB (90% usable); roomy holds one replica
    q = place(50.0, 2, 4000.0, False, cat)
    assert (q.instance, q.replicas) == ("roomy", 1)
    # a one-core server: 16 replicas on big (0.05/replica-h) beat 2 on small (0.0425/replica-h)? no: small still wins
    r = place(50.0, 1, 100.0, False, cat)
    assert (r.instance, r.replicas, r.throughput_rps) == ("small", 2, 100.0)
    assert place(50.0, 2, 100.0, True, cat).instance == "gpu1"
    # measured CPU (1.3 cores busy): one replica on small ($0.085 each), twelve on big ($0.067 each)
    s = place(50.0, 1.3, 100.0, False, cat)
    assert (s.instance, s.replicas) == ("big", 12) and s.usd_per_million == pytest.approx(0.80 / (600 * 3600) * 1e6, rel=1e-5)
    assert place(0.0, 2, 100.0, False, cat) is None
    assert place(50.0, 32, 100.0, False, cat) is None  # no instance has 32 vCPUs


def test_what_a_cpu_cannot_run_is_named():
    assert "GPU" in unsupported("eager", "fp16", False, "cpu")
    assert "channels_last" in unsupported("onnx", "fp32", True, "cpu")
    assert "bf16" in unsupported("onnx", "bf16", False, "cpu")
    assert "unknown runtime" in unsupported("tensorrt", "fp32", False, "cpu")
    assert unsupported("eager", "fp32", True, "cpu") is None
    assert "runtime onnx" in unsupported("eager", "int8", False, "cpu")  # int8 is ONNX Runtime's quantization
    assert unsupported("onnx", "int8", False, "cpu") is None


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_is_served_only_with_bf16_instructions(monkeypatch, native):
    """oneDNN runs bf16 on any AVX-512 CPU, emulated and slower than fp32 where the CPU lacks
    AVX512-BF16 or AMX: the search should not spend a measurement on it there."""
    import lepton_core.serving.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_native_bf16", lambda: native)
    reason = unsupported("eager", "bf16", False, "cpu")
    assert (reason is None) if native else ("no bf16 instructions" in reason)


def test_int8_is_searched_on_a_cpu_and_needs_calibration_images():
    from lepton_core.serving.server import ServeConfig

    assert "int8" in space("cpu", 2)["precision"] and "fp16" not in space("cpu", 2)["precision"]
    assert Candidate(runtime="onnx", precision="int8").serve_config("cal.npy").calibration == "cal.npy"
    assert Candidate(runtime="onnx").serve_config("cal.npy").calibration == ""  # fp32 ignores it
    with pytest.raises(ValueError, match="int8 needs calibration images"):
        ServeConfig(runtime="onnx", precision="int8")


def _fake_measure(cores: int = 2):
    """Throughput grows with batch size and is best with onnx; compile is not runnable; bf16 loses
    accuracy."""
    calls: list[Candidate] = []

    def measure(c: Candidate) -> Measurement:
        calls.append(c)
        used = c.cores(cores)
        if c.runtime == "compile":
            return Measurement(c, SKIPPED, "no compiler (test)", used)
        if c.precision == "bf16":
            return Measurement(c, REJECTED, "accuracy (test)", used, accuracy_delta=-3.0)
        rate = 20.0 * math.log2(2 * c.max_batch_size) * (1.6 if c.runtime == "onnx" else 1.0) / used
        return Measurement(c, OK, None, used, startup_s=1.0, warm_up_s=0.1, accuracy=0.9, accuracy_delta=0.0,
                           agreement=1.0, rate_rps=rate, latency_ms={"p50": 5.0, "p95": 40.0 / c.max_batch_size ** 0.5, "p99": 50.0},
                           peak_memory_mb=300.0)

    return measure, calls


def test_study_starts_from_the_baseline_and_finds_a_cheaper_configuration(tmp_path):
    measure, calls = _fake_measure()
    result = run_study("s", tmp_path / "study.journal", measure, _catalogue(), device="cpu", cores=2,
                       settings=StudySettings(trials=10, patience=10, seed=3))
    assert calls[0] == baseline(2) and result.baseline.number == 0
    measured = [t for t in result.trials if t.reused_from is None and t.measurement.status != SKIPPED]
    assert len(measured) == 10 and "budget of 10" in result.stopped
    assert result.best.cost < result.baseline.cost
    assert result.best.cost == min(t.cost for t in result.trials if t.cost is not None)
    skipped = [t for t in result.trials if t.measurement.status == SKIPPED]
    assert all(t.measurement.reason == "no compiler (test)" and t.placement is None for t in skipped)
    # the space is conditional: nothing this machine cannot run is proposed, and what is left out is named
    assert all(unsupported(c.runtime, c.precision, c.channels_last, "cpu") is None for c in calls)
    assert {c.precision for c in calls if c.runtime == "onnx"} >= {"int8"}
    assert "runtime onnx" in result.extra["not_searched"]["eager, int8"]
    assert "channels_last does not apply" in result.extra["not_searched"]["onnx, fp32, channels_last"]
    assert "not_searched" in result.record()
    # no configuration is measured twice
    assert len(calls) == len(set(calls))
    # the Pareto front: nothing on it is beaten on both cost and p95
    front = result.pareto()
    assert front and front[0].cost == result.best.cost


def test_study_stops_when_the_best_stops_improving(tmp_path):
    measure, _ = _fake_measure()
    result = run_study("s", tmp_path / "study.journal", measure, _catalogue(), device="cpu", cores=2,
                       settings=StudySettings(trials=40, patience=3, seed=0))
    assert "not improved for 3" in result.stopped


def test_a_second_run_continues_the_study_instead_of_starting_over(tmp_path):
    journal = tmp_path / "study.journal"
    measure, calls = _fake_measure()
    first = run_study("s", journal, measure, _catalogue(), device="cpu", cores=2, settings=StudySettings(trials=3, patience=50))
    n_first = len(calls)
    again = run_study("s", journal, measure, _catalogue(), device="cpu", cores=2, settings=StudySettings(trials=3, patience=50))
    assert len(calls) == n_first and again.resumed == len(first.trials)  # nothing measured again
    more = run_study("s", journal, measure, _catalogue(), device="cpu", cores=2, settings=StudySettings(trials=5, patience=50))
    new = calls[n_first:]
    assert len([c for c in new if c.runtime != "compile"]) == 2  # two more measurements, not five
    assert more.baseline.number == 0 and len(more.trials) > len(first.trials)


def test_the_study_says_what_it_resumes_and_leaves_out_and_each_trial_only_when_asked(tmp_path):
    """The flow's log gets the study's own lines (resumed, not searched) but not the per-trial ones,
    which each measure task logs itself: a trial logged twice would read as two trials."""
    journal = tmp_path / "study.journal"
    measure, calls = _fake_measure()
    lines: list[str] = []
    run_study("s", journal, measure, _catalogue(), device="cpu", cores=2, settings=StudySettings(trials=2, patience=50),
              say=lines.append)
    assert any(line.startswith("not searched: ") and "than the 2 cores" in line for line in lines)
    assert sum(line.startswith("trial ") for line in lines) == 2 * len(calls)  # proposed, then measured
    quiet: list[str] = []
    run_study("s", journal, measure, _catalogue(), device="cpu", cores=2, settings=StudySettings(trials=3, patience=50),
              say=quiet.append, say_trials=False)
    assert "continuing study s: 2 trials already measured" in quiet
    assert any(line.startswith("not searched: ") for line in quiet)
    assert not any(line.startswith("trial ") for line in quiet) and len(calls) > 2


def test_a_trial_an_interrupted_run_left_running_is_measured_again(tmp_path):
    import optuna

    from lepton_core.optimize.study import _storage

    journal = tmp_path / "study.journal"
    measure, calls = _fake_measure()
    run_study("s", journal, measure, _catalogue(), device="cpu", cores=2, settings=StudySettings(trials=1, patience=50))
    study = optuna.load_study(study_name="s", storage=_storage(journal))
    wanted = Candidate(runtime="onnx", max_batch_size=8, batch_timeout_ms=5, threads=1, workers=2)
    for _ in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):  # the first guesses: out of the way
        study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial(params(wanted, combinations("cpu", 2)[0], 2))
    study.ask()  # then the run "dies", before the trial's configuration is proposed
    n = len(calls)
    run_study("s", journal, measure, _catalogue(), device="cpu", cores=2, settings=StudySettings(trials=2, patience=50))
    assert calls[n] == wanted


def test_proposals_use_at_most_the_machines_cores():
    """Threads per worker are chosen once the workers are, within the cores: on 4 cores every pair
    whose product is at most 4 is proposed, and none above (2 workers of 2 threads on 2 cores served
    a tenth of 1 thread each)."""
    import optuna

    runnable = combinations("cpu", 4)[0]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    pairs = set()
    for _ in range(300):
        trial = study.ask()
        c = propose(trial, "cpu", 4, runnable)
        pairs.add((c.threads, c.workers))
        study.tell(trial, 1.0)
    assert pairs == {(1, 1), (2, 1), (4, 1), (1, 2), (2, 2), (1, 4)}
    assert threads_for(1, 1) == (1,) and threads_for(2, 2) == (1,) and threads_for(1, 16) == (1, 2, 4, 8, 16)
    assert params(baseline(4), runnable, 4)["threads[1 workers]"] == 4  # the baseline, enqueued as the space names it


def test_a_batching_wait_without_batching_is_the_same_configuration():
    a = Candidate(max_batch_size=1, batch_timeout_ms=20, threads=2)
    assert a.canonical() == Candidate(max_batch_size=1, threads=2) == baseline(2)
    b = Candidate(max_batch_size=8, batch_timeout_ms=20)
    assert b.canonical() == b


def test_a_configurations_label_names_what_it_serves_with():
    """The label the report, the trials table and the logs show: singular for one thread or worker."""
    assert (Candidate(runtime="onnx", precision="int8", max_batch_size=8, batch_timeout_ms=20, threads=1, workers=1).label()
            == "onnx, int8, batch 8, wait 20 ms, 1 thread, 1 worker")
    assert Candidate(max_batch_size=1, threads=2, workers=3).label() == "eager, fp32, batch 1, 2 threads, 3 workers"
    assert Candidate(threads=0, channels_last=True).label().endswith("channels_last, batch 1, all threads, 1 worker")
