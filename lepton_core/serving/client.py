"""A small client of the model API, and a running server as a context manager."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import httpx

from lepton_core.errors import LeptonError
from lepton_core.procs import free_port
from lepton_core.serving.protocol import PREDICT_PATH


class ServerError(LeptonError):
    """The model server did not start, or answered with an error."""


def encode(image) -> str:
    """A PIL image, a path or PNG/JPEG bytes as the API's base64 string."""
    if isinstance(image, (bytes, bytearray)):
        raw = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        raw = Path(image).read_bytes()
    else:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        raw = buffer.getvalue()
    return base64.b64encode(raw).decode()


class ModelClient:
    """``predict``, ``health`` and ``info`` of a model server at ``base_url``."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def health(self) -> bool:
        try:
            r = self.http.get("/health")
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and r.text.strip('"') == "ok"

    def info(self) -> dict:
        return self._json(self.http.get("/info"))

    def predict(self, images: list) -> list[dict]:
        """One prediction (``label``, ``index``, ``confidence``) per image, in order."""
        body = {"images": [encode(i) for i in images]}
        return self._json(self.http.post(PREDICT_PATH, json=body))["predictions"]

    def predict_one(self, image) -> dict:
        return self._json(self.http.post(PREDICT_PATH, json={"image": encode(image)}))["predictions"][0]

    def _json(self, response: httpx.Response) -> dict:
        if response.status_code != 200:
            try:
                reason = response.json().get("error") or response.json().get("detail")
            except (json.JSONDecodeError, AttributeError):
                reason = response.text[:200]
            raise ServerError(f"{self.base_url}{response.request.url.path}: HTTP {response.status_code}: {reason}")
        return response.json()


class ServerProcess:
    """A model server in its own process group on ``host`` (127.0.0.1) and a free port; stopped,
    with everything it started, when the context ends (also on error)."""

    def __init__(self, checkpoint: str | os.PathLike, *, name: str = "model", version: str = "local", config=None,
                 host: str = "127.0.0.1", port: int | None = None, log: str | os.PathLike | None = None,
                 start_timeout: float = 120.0) -> None:
        from lepton_core.serving.server import ServeConfig

        self.checkpoint, self.name, self.version = str(checkpoint), name, version
        self.config = config or ServeConfig()
        self.host, self.port = host, port or free_port(host)
        self.log, self.start_timeout = log, start_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerProcess:
        """Start and wait until it answers ``/health``."""
        return self.launch().wait_ready()

    def launch(self) -> ServerProcess:
        """Start without waiting (several servers start faster side by side); then ``wait_ready``."""
        cmd = [sys.executable, "-m", "lepton_core.serving.server", "--checkpoint", self.checkpoint, "--host", self.host,
               "--port", str(self.port), "--name", self.name, "--version", self.version,
               "--config", json.dumps(asdict(self.config))]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self) -> ServerProcess:
        deadline = time.monotonic() + self.start_timeout
        with ModelClient(self.url, timeout=2) as client:
            while not client.health():
                if self.proc.poll() is not None:
                    raise ServerError(f"the model server for {self.checkpoint} exited at start-up (code {self.proc.returncode})"
                                      + (f"; see {self.log}" if self.log else ""))
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServerError(f"the model server for {self.checkpoint} did not answer on {self.url} "
                                      f"within {self.start_timeout:.0f} s")
                time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
