"""The model server: a lepton checkpoint behind LitServe (dynamic batching from the library), with
the API of ``protocol``. It binds 127.0.0.1 unless told otherwise and writes no files.

Run: ``python -m lepton_core.serving.server --checkpoint PATH --port N [--host H] [--max-batch-size N]
[--batch-timeout S] [--workers N] [--name NAME --version V]``; ``lepton serve`` and ``ServerProcess``
start it so.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import time
from dataclasses import asdict, dataclass, field

import litserve as ls
import numpy as np
import torch

from lepton_core.serving.protocol import PREDICT_PATH, CheckRequests

SETUP_MARK = "lepton-setup"


@dataclass(frozen=True)
class ServeConfig:
    """How the model is served (what the optimisation loop tunes)."""

    max_batch_size: int = 8  # requests LitServe may gather into one forward pass
    batch_timeout: float = 0.005  # seconds it waits to fill a batch (LitServe busy-polls its queue at 0)
    workers: int = 1  # model processes per device
    max_images: int = 64  # images per request
    max_bytes: int = 8 * 1024 * 1024  # request body
    threads: int = 0  # torch (or ONNX Runtime) threads per worker (0: the library's default)
    runtime: str = "eager"  # eager, compile (torch.compile) or onnx (ONNX Runtime); see serving.runtime
    precision: str = "fp32"  # fp32, bf16, fp16 (GPU) or int8 (ONNX Runtime on the CPU)
    channels_last: bool = False  # NHWC memory format for the convolutions
    calibration: str = ""  # int8: a .npy of preprocessed images (n, 3, S, S) that fix the activation ranges
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from lepton_core.serving.runtime import PRECISIONS, RUNTIMES

        if self.runtime not in RUNTIMES:
            raise ValueError(f"serving runtime {self.runtime!r}: one of {', '.join(RUNTIMES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"serving precision {self.precision!r}: one of {', '.join(PRECISIONS)}")
        for name in ("max_batch_size", "workers", "max_images", "max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"serving {name} is {getattr(self, name)}; at least 1")
        if self.precision == "int8" and not self.calibration:
            raise ValueError("serving precision int8 needs calibration images (calibration: a .npy file)")
        if self.threads < 0 or self.batch_timeout <= 0:
            raise ValueError("serving threads must be >= 0 and batch_timeout > 0")


class ClassifierAPI(ls.LitAPI):
    """One lepton checkpoint; a request's images are one sub-batch, and LitServe's batch joins
    requests; predictions come back split per request."""

    def __init__(self, checkpoint: str, config: ServeConfig) -> None:
        super().__init__(max_batch_size=config.max_batch_size, batch_timeout=config.batch_timeout, api_path=PREDICT_PATH)
        self.checkpoint, self.config = checkpoint, config

    def setup(self, device: str) -> None:
        from lepton_core.hardware import reuse_freed_memory
        from lepton_core.serving.runtime import build_runner
        from lepton_core.transfer.checkpoint import load_network

        t0 = time.perf_counter()
        reuse_freed_memory()  # a batch's activations (25 MB for 8 images at 224) without fresh pages each request
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        net, meta = load_network(self.checkpoint)
        c = self.config
        calibration = torch.from_numpy(np.load(c.calibration, allow_pickle=False)) if c.precision == "int8" else None
        self.run, warm = build_runner(net, runtime=c.runtime, precision=c.precision, channels_last=c.channels_last,
                                      device=device, input_size=meta.input_size, max_batch_size=c.max_batch_size,
                                      threads=c.threads, calibration=calibration)
        self.meta = meta
        # One line the optimisation harness reads from the server's log: set-up and warm-up (compile) time.
        print(f"{SETUP_MARK} " + json.dumps({"device": device, "setup_s": round(time.perf_counter() - t0, 3),
                                             "warm_up_s": round(warm, 3)}), flush=True)

    def decode_request(self, request: dict) -> torch.Tensor:  # already checked by CheckRequests
        from PIL import Image

        items = [request["image"]] if "image" in request else request["images"]
        images = [Image.open(io.BytesIO(base64.b64decode(item))) for item in items]
        return self.meta.preprocess.tensor(images)  # (n, 3, S, S)

    def batch(self, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
        return torch.cat(inputs), [len(x) for x in inputs]

    def predict(self, x):
        batched = isinstance(x, tuple)
        images, sizes = x if batched else (x, [len(x)])
        probs = self.run(images)
        return (probs, sizes) if batched else probs

    def unbatch(self, output) -> list[torch.Tensor]:
        probs, sizes = output
        return list(torch.split(probs, sizes))

    def encode_response(self, probs: torch.Tensor) -> dict:
        confidence, index = probs.max(dim=1)
        return {"predictions": [{"label": self.meta.classes[int(i)], "index": int(i), "confidence": round(float(c), 6)}
                                for c, i in zip(confidence, index, strict=True)]}


def build_server(checkpoint: str, config: ServeConfig, info: dict) -> ls.LitServer:
    from lepton_core.transfer.checkpoint import load_checkpoint

    _, meta = load_checkpoint(checkpoint)
    metadata = {**info, "classes": list(meta.classes), "input_size": meta.input_size, "architecture": meta.architecture,
                "metrics": meta.metrics, "serving": asdict(config)}
    middleware = (CheckRequests, {"input_size": meta.input_size, "max_images": config.max_images, "max_bytes": config.max_bytes})
    return ls.LitServer(ClassifierAPI(checkpoint, config), accelerator="auto", devices="auto",
                        workers_per_device=config.workers, timeout=30, model_metadata=metadata,
                        middlewares=[middleware])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lepton_core.serving.server", description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="model")
    parser.add_argument("--version", default="local")
    parser.add_argument("--config", default="{}", help="ServeConfig fields as JSON")
    args = parser.parse_args(argv)
    config = ServeConfig(**json.loads(args.config))
    server = build_server(args.checkpoint, config, {"model": args.name, "version": args.version})
    server.run(host=args.host, port=args.port, generate_client_file=False, num_api_servers=1, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
