"""How a model server runs its network: the runtime (eager PyTorch, ``torch.compile``, ONNX
Runtime), the precision (fp32, bf16, fp16, int8) and the memory format (channels_last).

int8 is ONNX Runtime's static quantization on the CPU (QDQ, weights per channel, activations
uint8): the activation ranges come from calibration images the caller gives, preprocessed as
requests are, so the same images give the same quantized model wherever it is served.

``unsupported`` says, before anything is started, why this machine cannot run a combination (fp16
without a GPU, bf16 on a CPU without native bf16, no C++ compiler for ``torch.compile``'s CPU
code, no ONNX Runtime): the optimisation loop records such a configuration as skipped with that
reason. ``build_runner`` turns a network into a function from a batch of images to float32
class probabilities on the CPU, warmed up at the batch sizes the server will see, so that
compilation happens before the server answers ``/health``.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lepton_core.hardware import cpu_native_bf16

RUNTIMES = ("eager", "compile", "onnx")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # int8: ONNX Runtime's quantization


def device_kind(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else "cpu"


@functools.cache
def _onnxruntime_providers() -> tuple[str, ...] | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return tuple(onnxruntime.get_available_providers())


def unsupported(runtime: str, precision: str, channels_last: bool, device: str) -> str | None:
    """Why this machine cannot serve with this runtime, precision and memory format on ``device``
    ('cpu' or 'cuda...'), or None when it can."""
    if runtime not in RUNTIMES:
        return f"unknown runtime {runtime!r} (one of {', '.join(RUNTIMES)})"
    if precision not in PRECISIONS:
        return f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})"
    kind = device_kind(device)
    if kind == "cuda" and not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    if precision == "fp16" and kind != "cuda":
        return "fp16 is for GPUs; this server runs on the CPU"
    if precision == "int8":
        if runtime != "onnx":
            return "int8 is served through ONNX Runtime's quantized kernels (runtime onnx)"
        if kind != "cpu":
            return "int8 here is ONNX Runtime's CPU quantization; a GPU serves fp16 or bf16"
    if precision == "bf16":
        if kind == "cpu" and not cpu_native_bf16():
            return "this CPU has no bf16 instructions (AVX512-BF16 or AMX), so bf16 would be emulated and slower than fp32"
        if kind == "cuda" and not torch.cuda.is_bf16_supported():
            return "this GPU does not support bf16"
    if runtime == "compile":
        if not torch._dynamo.is_dynamo_supported():
            return "torch.compile is not supported on this Python or platform"
        if kind == "cpu" and not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")):
            return "torch.compile's CPU code needs a C++ compiler (g++ or clang++); none found"
    if runtime == "onnx":
        providers = _onnxruntime_providers()
        if providers is None:
            return "onnxruntime is not installed"
        if kind == "cuda" and "CUDAExecutionProvider" not in providers:
            return "this onnxruntime has no CUDA provider (onnxruntime-gpu serves ONNX on GPUs)"
        if kind == "cpu" and precision not in ("fp32", "int8"):
            return f"ONNX Runtime's CPU provider has no {precision} convolutions"
        if channels_last:
            return "channels_last does not apply to ONNX Runtime (it picks its own layout)"
    return None


def warm_sizes(max_batch_size: int) -> list[int]:
    """Batch sizes to run once before serving: 1, the largest, and one between."""
    return sorted({1, max(1, max_batch_size // 2), max_batch_size})


def build_runner(net: torch.nn.Module, *, runtime: str, precision: str, channels_last: bool, device: str,
                 input_size: int, max_batch_size: int, threads: int = 0,
                 calibration: torch.Tensor | None = None) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """``(run, warm_up_seconds)``: ``run(images)`` gives float32 probabilities on the CPU for a
    float32 batch ``(n, 3, S, S)``. ``calibration``: for int8, preprocessed images ``(n, 3, S, S)``
    that fix the activation ranges. Raises RuntimeError with the reason for a combination this
    machine cannot run (see ``unsupported``) or int8 without calibration images."""
    reason = unsupported(runtime, precision, channels_last, device)
    if reason:
        raise RuntimeError(reason)
    if precision == "int8":
        if calibration is None or calibration.ndim != 4 or tuple(calibration.shape[1:]) != (3, input_size, input_size) or not len(calibration):
            got = "none" if calibration is None else f"shape {tuple(calibration.shape)}"
            raise RuntimeError(f"int8 needs calibration images of shape (n, 3, {input_size}, {input_size}); got {got}")
    net = net.eval()
    if runtime == "onnx":
        run = _onnx_runner(net, input_size, device, threads, calibration if precision == "int8" else None)
    else:
        dtype, fmt = DTYPES[precision], torch.channels_last if channels_last else torch.contiguous_format
        net = net.to(device=device, dtype=dtype, memory_format=fmt)
        model = torch.compile(net, dynamic=True) if runtime == "compile" else net

        def run(images: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                x = images.to(device=device, dtype=dtype).contiguous(memory_format=fmt)
                return torch.softmax(model(x).float(), dim=1).cpu()

    t0 = time.perf_counter()
    for n in warm_sizes(max_batch_size):
        run(torch.zeros(n, 3, input_size, input_size))
    return run, time.perf_counter() - t0


def _onnx_runner(net: torch.nn.Module, input_size: int, device: str, threads: int,
                 calibration: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network exported to ONNX (batch dimension dynamic) in a temporary folder, removed once
    ONNX Runtime has read it; quantized to int8 on ``calibration`` when given."""
    import warnings

    import onnxruntime as ort

    net = net.to("cpu", torch.float32)
    with tempfile.TemporaryDirectory(prefix="lepton-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
            torch.onnx.export(net, (torch.zeros(1, 3, input_size, input_size),), str(path), input_names=["images"],
                              output_names=["logits"], dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
        if calibration is not None:
            path = _quantized(path, calibration)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        providers = ["CUDAExecutionProvider"] if device_kind(device) == "cuda" else ["CPUExecutionProvider"]
        session = ort.InferenceSession(path.read_bytes(), options, providers=providers)

    def run(images: torch.Tensor) -> torch.Tensor:
        logits = session.run(None, {"images": images.to(torch.float32).numpy()})[0]
        return torch.softmax(torch.from_numpy(logits), dim=1)

    return run


def _quantized(path: Path, calibration: torch.Tensor, batch: int = 8) -> Path:
    """ONNX Runtime's static int8 quantization of the model at ``path`` (next to it): the graph is
    pre-processed (shape inference, folding), then QDQ nodes are placed with weights quantized per
    channel (int8) and activations (uint8) to the min-max ranges seen on ``calibration``. Weights
    use 7 bits (``reduce_range``): x86 CPUs without VNNI multiply uint8 by int8 in 16-bit sums that
    saturate at full range (ONNX Runtime's own advice); on the demo's model that took agreement
    with fp32 from 93% to 99.7%, at the same speed. The classifier head (the global pooling and
    everything after it) stays in fp32, as is usual: it is a sliver of the compute, and a head
    fitted to features of small spread (the benchmark's resnet18 at 224) lost 73 accuracy points
    quantized, 1 without."""
    import logging
    import warnings

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = calibration.to(torch.float32).numpy()

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{"images": images[i:i + batch]} for i in range(0, len(images), batch)])

        def get_next(self):
            return next(self._batches, None)

    pre, out = path.with_name("pre.onnx"), path.with_name("int8.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # quantize_static logs its advice at INFO/WARNING on the root logger
        try:
            quant_pre_process(str(path), str(pre))
            quantize_static(str(pre), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                            nodes_to_exclude=_head(pre))
        finally:
            logging.getLogger().setLevel(level)
    return out


def _head(path: Path) -> list[str]:
    """The names of the classifier head's nodes: the last global pooling and every node after it
    (none when the graph has no global pooling)."""
    import onnx

    nodes = list(onnx.load(str(path), load_external_data=False).graph.node)
    pools = [i for i, n in enumerate(nodes) if n.op_type in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean")]
    return [n.name for n in nodes[pools[-1]:]] if pools else []
