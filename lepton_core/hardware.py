"""What this machine can do, where lepton's choices depend on it: its processor's bf16, and the C
allocator that CPU tensors come from."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
from pathlib import Path

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h) and the values lepton sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 256 << 20  # blocks up to this size come from the heap and are reused once freed
TRIM_THRESHOLD = 512 << 20  # free memory at the heap's top kept for the next tensors, up to this much
# what says that the user chose the allocator's behaviour: then lepton leaves it alone
_USER_CHOICES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


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


@functools.cache
def reuse_freed_memory() -> bool:
    """Have glibc's malloc serve blocks of up to ``MMAP_THRESHOLD`` from its heap, so that the
    memory a freed tensor leaves is reused by the next one; returns whether it was set.

    By default glibc maps every block above its mmap threshold (128 KiB, raised as large blocks are
    freed, never above 32 MiB) with a fresh ``mmap`` and unmaps it on ``free``: each such tensor
    then pays the kernel's page faults as it is first written, and a CPU training step or inference
    batch makes and frees dozens of them. On a 2-core EPYC VM (benchmarks/RESULTS.md, 2026-12-03):
    ``sigmoid`` on a fresh 2 x 2,048 x 64 tensor 1,155 us against 127 us once set; a model server's
    batch (resnet18, 8 images at 224) 12,512 page faults against none, in 0.79-0.86x the time; a
    training step's thousands of faults down to about a hundred. PyTorch's CPU tuning guide gets
    the same by swapping in jemalloc or tcmalloc; this needs nothing installed.

    Process-wide, set once a process (the worker that runs a flow, the model server). Memory a
    process frees stays in it, up to ``TRIM_THRESHOLD`` at the heap's top, for its next tensors.
    Left alone where the user chose: ``LEPTON_MALLOC_TUNING=0``, any of glibc's ``MALLOC_*_``
    variables, ``GLIBC_TUNABLES`` with a ``glibc.malloc`` setting, or another allocator in
    ``LD_PRELOAD``; and off glibc (musl, macOS, Windows)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    chosen = [name for name in _USER_CHOICES if name in os.environ]
    if os.environ.get("LEPTON_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        chosen.append("LEPTON_MALLOC_TUNING")
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        chosen.append("GLIBC_TUNABLES")
    if "malloc" in os.environ.get("LD_PRELOAD", ""):
        chosen.append("LD_PRELOAD")
    if chosen:
        log.debug("the allocator is left as %s set it", ", ".join(chosen))
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # an older glibc takes no threshold above 32 MiB (half its heap size): then that
    if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) or mallopt(_M_MMAP_THRESHOLD, 32 << 20)):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
