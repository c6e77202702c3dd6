"""The model server (LitServe) on the demo's on-prem checkpoint: the same answers as the model in
process, the API's endpoints, every bad request a 4xx while it keeps serving."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image

from lepton_core.serving.client import ModelClient, ServerError, ServerProcess, encode
from lepton_core.serving.server import ServeConfig
from lepton_core.transfer.backbones import build_model
from lepton_core.transfer.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def onprem(demo_full: Path) -> Path:
    return demo_full.parent / "models" / "onprem-resnet18.pt"


@pytest.fixture(scope="module")
def server(onprem: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with ServerProcess(onprem, name="digits-classifier", version="onprem-test", log=log,
                       config=ServeConfig(max_batch_size=4, batch_timeout=0.02, max_images=16)) as s:
        yield s


def golden_images(demo_full: Path, n: int = 12) -> list[Path]:
    return sorted((demo_full.parent / "data" / "digits-onprem" / "test").rglob("*.png"))[:n]


def in_process(onprem: Path, images: list[Path]) -> torch.Tensor:
    state, meta = load_checkpoint(onprem)
    net = build_model(meta.architecture, len(meta.classes), meta.input_size)
    net.load_state_dict(state)
    with torch.inference_mode():
        return torch.softmax(net.eval()(meta.preprocess.tensor([Image.open(p) for p in images])), dim=1)


def test_it_binds_127_0_0_1_and_answers_like_the_model_in_process(server: ServerProcess, onprem: Path, demo_full: Path) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    images = golden_images(demo_full)
    expected = in_process(onprem, images)
    with ModelClient(server.url) as client:
        assert client.health()
        batch = client.predict(images)
        single = [client.predict_one(p) for p in images[:3]]
    assert [p["index"] for p in batch] == expected.argmax(1).tolist()
    assert [p["label"] for p in batch] == [str(i) for i in expected.argmax(1).tolist()]
    for p, probs in zip(batch, expected, strict=True):
        assert p["confidence"] == pytest.approx(float(probs.max()), abs=1e-4)
    assert [p["index"] for p in single] == [p["index"] for p in batch[:3]]
    assert [p["confidence"] for p in single] == pytest.approx([p["confidence"] for p in batch[:3]], abs=1e-5)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answers(server: ServerProcess, onprem: Path,
                                                                       demo_full: Path) -> None:
    images = golden_images(demo_full, 24)
    expected = in_process(onprem, images).argmax(1).tolist()
    groups = [images[i:i + 3] for i in range(0, 24, 3)]  # 8 requests of 3 images, sent at once
    with ModelClient(server.url) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(client.predict, groups))
    assert [p["index"] for a in answers for p in a] == expected


def test_info_describes_the_model_and_its_serving_configuration(server: ServerProcess) -> None:
    with ModelClient(server.url) as client:
        info = client.info()["model"]
    assert info["model"] == "digits-classifier" and info["version"] == "onprem-test"
    assert info["classes"] == [str(c) for c in range(10)] and info["input_size"] == 32
    assert info["serving"]["max_batch_size"] == 4 and "source_test_accuracy" in info["metrics"]


def png(size: int) -> str:
    return encode(Image.new("L", (size, size)))


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"", 400, "empty body"),
    (b"{not json", 400, "body is not JSON"),
    (json.dumps({"image": "@@@"}).encode(), 400, "image: not valid base64"),
    (json.dumps({"image": base64.b64encode(b"plain text").decode()}).encode(), 415, "image: not an image"),
    (json.dumps({"images": [png(32), png(28)]}).encode(), 422, r"images\[1\]: 28x28 pixels; the model takes 32x32"),
    (json.dumps({"images": []}).encode(), 400, "must be a non-empty list"),
    (json.dumps({"image": png(32), "images": [png(32)]}).encode(), 400, "exactly one of"),
    (json.dumps({"images": [png(32)] * 17}).encode(), 413, "batch of 17 images; at most 16 per request"),
    (b"{" + b" " * (9 * 1024 * 1024) + b"}", 413, r"body of 9,437,186 bytes; at most 8,388,608"),
])
def test_a_bad_request_gets_a_4xx_and_the_server_keeps_serving(server: ServerProcess, demo_full: Path, body: bytes,
                                                               status: int, message: str) -> None:
    import re

    r = httpx.post(f"{server.url}/predict", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == status and re.search(message, r.json()["error"])
    with ModelClient(server.url) as client:
        assert client.predict_one(golden_images(demo_full, 1)[0])["label"]


def test_the_client_raises_with_the_servers_reason(server: ServerProcess) -> None:
    with ModelClient(server.url) as client, pytest.raises(ServerError, match=r"HTTP 422: image: 28x28 pixels"):
        client.predict_one(Image.new("L", (28, 28)))


def test_serving_a_model_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    lepton = [sys.executable, "-c", "from flows.cli import main; main()"]
    proc = subprocess.run([*lepton, "serve", str(tmp_path / "missing.pt")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {tmp_path / 'missing.pt'}: no such checkpoint file"
    proc = subprocess.run([*lepton, "serve", "s3://bucket/not/a/version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a registered version (expected s3://BUCKET/ROOT/MODEL/versions/VERSION/)" in proc.stderr


def test_int8_without_its_calibration_images_is_a_clear_error(demo_full: Path, tmp_path: Path) -> None:
    lepton = [sys.executable, "-c", "from flows.cli import main; main()"]
    ckpt = str(demo_full.parent / "models" / "onprem-resnet18.pt")
    proc = subprocess.run([*lepton, "serve", ckpt, "--runtime", "onnx", "--precision", "int8"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: --precision int8 needs --calibration (the .npy of images it is quantized on; `lepton optimize` writes one)")
    proc = subprocess.run([*lepton, "serve", ckpt, "--runtime", "onnx", "--precision", "int8", "--calibration", str(tmp_path / "none.npy")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: --calibration {tmp_path / 'none.npy'}: no such file"
    import numpy as np

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((4, 3, 8, 8), dtype=np.float32))  # not the model's 32x32
    proc = subprocess.run([*lepton, "serve", ckpt, "--runtime", "onnx", "--precision", "int8", "--calibration", str(wrong)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: --calibration {wrong}: images of shape (4, 3, 8, 8); the model needs (n, 3, 32, 32)")
    text = tmp_path / "text.npy"
    text.write_text("not numpy")
    proc = subprocess.run([*lepton, "serve", ckpt, "--runtime", "onnx", "--precision", "int8", "--calibration", str(text)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: --calibration {text}: not a .npy of images") and len(proc.stderr.strip().splitlines()) == 1


def test_a_port_another_process_holds_is_a_clear_error_before_anything_starts(onprem: Path) -> None:
    import socket

    lepton = [sys.executable, "-c", "from flows.cli import main; main()"]
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = subprocess.run([*lepton, "serve", str(onprem), "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""  # refused before it says it is serving
    assert proc.stderr == f"error: cannot listen on 127.0.0.1:{port}: Address already in use (choose another --port or --host)\n"
    proc = subprocess.run([*lepton, "serve", str(onprem), "--port", "80"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Input should be greater than or equal to 1024" in proc.stderr  # LitServe's range
