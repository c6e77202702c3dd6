"""The serving-optimisation harness against the real model server on the demo's on-prem checkpoint:
a deliberately slow configuration measures slower; what cannot run here is skipped with its
reason (never a crash); the load is open-loop. The flow and its study: tests/flows/test_optimize.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lepton_core.optimize.harness import (OK, REJECTED, SKIPPED, HarnessSettings, load_step, write_calibration,
                                          measure, request_bodies)
from lepton_core.optimize.space import Candidate
from lepton_core.serving.client import ServerProcess
from tests.conftest import onprem_evaluation

QUICK = dict(step_seconds=1.0, warm_up_seconds=0.3, max_steps=4, min_requests=12)


@pytest.fixture(scope="module")
def evaluation(demo_full: Path):
    return onprem_evaluation(demo_full, "digits-onprem")


@pytest.fixture(scope="module")
def onprem(evaluation) -> Path:
    return evaluation[0]


def test_a_deliberately_slow_configuration_measures_slower(onprem: Path, evaluation, tmp_path: Path) -> None:
    _, evalset, ref = evaluation
    # An SLO of 250 ms: the slow configuration's 400 ms window breaks it by a wide margin on any
    # host, while the baseline meets it on a slow one too. At 150 ms a slow AMD EPYC's baseline
    # (one request about 55 ms of CPU there) was once rejected: a quick step's p95 over 12
    # requests is nearly their maximum, and one request delayed on a contended core decides it.
    slo = 250
    settings = HarnessSettings(slo_p95_ms=slo, **QUICK)
    fast = measure(onprem, Candidate(threads=0), evalset, ref, settings, tmp_path)
    # LitServe gathers a batch for up to batch_timeout: at a request or two a second, requests
    # wait up to a 400 ms window (p95 near 400 ms; the median varies from step to step, 100-330 ms
    # here); and no rate fills 64 images within the SLO (that takes over 400 requests/s). The
    # load's Poisson arrivals see the whole window: requests at a fixed interval once fell into
    # step with it and passed the SLO (tests/unit/test_load.py shows why)
    slow = measure(onprem, Candidate(max_batch_size=64, batch_timeout_ms=400), evalset, ref, settings, tmp_path)
    assert fast.status == OK and fast.rate_rps > 0 and fast.latency_ms["p95"] <= slo, fast.reason
    assert fast.accuracy_delta == 0.0 and fast.agreement == 1.0  # eager fp32 is the reference itself
    assert fast.startup_s > 0 and fast.warm_up_s is not None and fast.peak_memory_mb > 100
    # what its processes kept busy: at most the machine, and a plausible CPU time a request (11 ms on
    # an Intel host at 140 requests/s, 55 ms on a slow EPYC at 11; nothing near 0, as the client's alone)
    assert fast.cpu_cores <= 2.5 and fast.cores_used == fast.cpu_cores
    assert 0.002 < fast.cpu_cores / fast.rate_rps < 0.5, (fast.cpu_cores, fast.rate_rps)
    assert slow.status == REJECTED and slow.rate_rps == 0.0 and "over the SLO" in slow.reason
    steps = [(s["offered_rps"], s["latency_ms"]["p50"], s["latency_ms"]["p95"]) for s in slow.steps]
    fast_p50 = max(s["latency_ms"]["p50"] for s in fast.steps if s["passed"])
    assert fast_p50 < slo
    assert all(p95 > slo for _, _, p95 in steps), steps  # every rate it was tried at broke the SLO: requests wait most of 400 ms
    assert all(p50 > fast_p50 for _, p50, _ in steps), (steps, fast_p50)  # slower at every rate, median too


def test_what_cannot_run_is_skipped_with_its_reason(onprem: Path, evaluation, tmp_path: Path) -> None:
    _, evalset, ref = evaluation
    settings = HarnessSettings(slo_p95_ms=150, **QUICK)
    fp16 = measure(onprem, Candidate(precision="fp16"), evalset, ref, settings, tmp_path)
    assert fp16.status == SKIPPED and "GPU" in fp16.reason and fp16.startup_s is None
    # a server that dies at start-up (here: a checkpoint that is not one) is a skipped trial, not an exception
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    dead = measure(broken, Candidate(), evalset, ref, settings, tmp_path)
    assert dead.status == SKIPPED and dead.reason and dead.rate_rps == 0.0


def test_int8_is_quantized_on_the_training_split_and_keeps_the_answers(onprem: Path, evaluation, demo_full: Path,
                                                                       tmp_path: Path) -> None:
    import numpy as np
    import torch

    from lepton_core.serving.runtime import build_runner
    from lepton_core.transfer.checkpoint import load_network

    _, evalset, ref = evaluation
    root = demo_full.parent / "data" / "digits-onprem"
    net, meta = load_network(onprem)
    calibration = write_calibration(root, tuple(meta.classes), onprem, tmp_path / "calibration.npy", limit=48)
    images = torch.from_numpy(np.load(calibration))
    assert images.shape == (48, 3, meta.input_size, meta.input_size)
    assert write_calibration(root, tuple(meta.classes), onprem, tmp_path / "again.npy", limit=48)  # the same images each time
    assert (tmp_path / "again.npy").read_bytes() == (tmp_path / "calibration.npy").read_bytes()
    with pytest.raises(RuntimeError, match="int8 needs calibration images"):
        build_runner(net, runtime="onnx", precision="int8", channels_last=False, device="cpu", input_size=meta.input_size,
                     max_batch_size=2)
    int8, _ = build_runner(net, runtime="onnx", precision="int8", channels_last=False, device="cpu",
                           input_size=meta.input_size, max_batch_size=2, calibration=images)
    fp32, _ = build_runner(net, runtime="onnx", precision="fp32", channels_last=False, device="cpu",
                           input_size=meta.input_size, max_batch_size=2)
    out8, out32 = int8(images), fp32(images)
    assert out8.shape == out32.shape and torch.allclose(out8.sum(dim=1), torch.ones(len(images)), atol=1e-4)
    assert not torch.equal(out8, out32)  # really quantized: not the fp32 network's numbers
    assert (out8.argmax(1) == out32.argmax(1)).float().mean() >= 0.95

    settings = HarnessSettings(slo_p95_ms=150, **QUICK)
    served = measure(onprem, Candidate(runtime="onnx", precision="int8", threads=1), evalset, ref, settings, tmp_path,
                     calibration)
    assert served.status == OK and served.agreement >= 0.95 and served.rate_rps > 0, served.reason
    none = measure(onprem, Candidate(runtime="onnx", precision="int8"), evalset, ref, settings, tmp_path)
    assert none.status == SKIPPED and "calibration" in none.reason


def test_load_steps_count_from_when_requests_were_due(onprem: Path, evaluation, tmp_path: Path) -> None:
    """Open loop: past the server's capacity latency grows with the backlog instead of the generator
    slowing down to match the server."""
    _, evalset, _ = evaluation
    bodies = request_bodies(evalset, 4, tmp_path / "bodies")
    settings = HarnessSettings(slo_p95_ms=150, step_seconds=2.0, warm_up_seconds=0.2, min_requests=10)
    with ServerProcess(onprem, log=tmp_path / "server.log") as server:
        # its first requests can take seconds on a slow host (a fresh server answered 10 requests at 2 a
        # second with a median of 1.2 s there, the third such step with 46 ms): warmed first, as the
        # harness's measurements are
        easy = load_step(server.url + "/predict", bodies, 2.0, replace(settings, warm_up_seconds=5.0))
        flood = load_step(server.url + "/predict", bodies, 500.0, settings)
    assert easy["errors"] == 0 and easy["ok"] == easy["requests"] and easy["latency_ms"]["p95"] < 150
    # requests left faster than answers came back: the generator did not wait for the server
    answered_rps = flood["ok"] / (flood["window"][1] - flood["window"][0])
    assert flood["requests"] == 500 * 2 and flood["achieved_rps"] > 1.3 * answered_rps, (flood, answered_rps)
    assert flood["latency_ms"]["p95"] > 4 * easy["latency_ms"]["p95"]


def test_an_int8_choice_ships_its_calibration_images_with_the_bundle(demo_data: Path, state_root: Path, tmp_path: Path) -> None:
    """The cutover bundle of an int8 choice carries the images it was quantized on, and the serve
    command names them by their s3:// URI, which `lepton serve` fetches."""
    from types import SimpleNamespace

    import numpy as np

    from flows.cli import _calibration_file
    from lepton_core.choice.record import settled
    from lepton_core.optimize.run import update_bundle
    from lepton_core.spec import load_spec
    from lepton_core.store import EmbeddedStore
    from lepton_core.state import store_dir
    from lepton_core.store.target import open_store

    loaded = settled(load_spec(demo_data))
    local = tmp_path / "calibration.npy"
    np.save(local, np.random.default_rng(0).random((4, 3, 8, 8), dtype=np.float32))
    serving = {"serving": {"precision": "int8", "runtime": "onnx", "calibration": str(local)},
               "command": ["lepton", "serve", "MODEL_URI", "--precision", "int8", "--calibration", str(local)]}
    try:
        uri = update_bundle(loaded, SimpleNamespace(model="digits", version="v1"), serving, tmp_path / "out", state_root)
        store = open_store(loaded.spec.target, state_root, start=True)
        bucket, prefix = uri.removeprefix("s3://").split("/", 1)
        written = json.loads(store.get_bytes(bucket, f"{prefix}serving.json"))
        shipped = f"{uri}calibration.npy"
        assert written["serving"]["calibration"] == shipped and written["command"][-2:] == ["--calibration", shipped]
        assert store.get_bytes(bucket, f"{prefix}calibration.npy") == local.read_bytes()
        fetched = _calibration_file(shipped, demo_data)  # what `lepton serve --serving-config serving.json` does
        assert Path(fetched).read_bytes() == local.read_bytes() and Path(fetched).is_relative_to(state_root)
    finally:
        EmbeddedStore(store_dir(state_root)).down()
