"""What this machine's processor can do, where lepton's choices depend on it."""

from __future__ import annotations

from pathlib import Path


def cpu_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 instructions (x86's AVX512-BF16 or AMX-BF16, as Linux lists them
    in ``cpuinfo``). Only then can bf16 be faster than fp32 there: on a 2-core AVX512-BF16 machine
    a resnet18 training step at 32x32 took 0.7-0.8x the fp32 time, an inference pass 0.55x
    (benchmarks/RESULTS.md). oneDNN also runs bf16 on AVX-512 CPUs without them (what
    ``torch.ops.mkldnn._is_mkldnn_bf16_supported`` reports), emulated and slower than fp32; and
    elsewhere (no such file: macOS, Windows) fp32 is kept."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags
