"""The C allocator setting that CPU tensors come from (``reuse_freed_memory``), each case in a fresh
interpreter: the setting is process-wide and made once a process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# In a fresh interpreter: how many blocks glibc maps with mmap for a 48 MiB array (above the 32 MiB
# that its own threshold ever rises to), before and after the call, and what the call returned.
PROBE = """
import ctypes, json
import numpy as np
from lepton_core.hardware import reuse_freed_memory

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info

def mapped_for_one_array():
    before = libc.mallinfo2().hblks
    a = np.ones(48 << 20, dtype=np.uint8)
    during = libc.mallinfo2().hblks
    del a
    return during - before

first = mapped_for_one_array()
applied = reuse_freed_memory()
print(json.dumps({"before": first, "applied": applied, "after": mapped_for_one_array(),
                  "again": reuse_freed_memory()}))
"""


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "LEPTON_MALLOC_TUNING")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_once_set_a_large_array_comes_from_the_heap_instead_of_a_fresh_mapping():
    result = probe()
    assert result == {"before": 1, "applied": True, "after": 0, "again": True}


@pytest.mark.parametrize("env", [{"MALLOC_MMAP_THRESHOLD_": "131072"}, {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"},
                                 {"LEPTON_MALLOC_TUNING": "0"}])
def test_an_allocator_the_user_set_or_kept_is_left_as_it_is(env):
    result = probe(**env)
    assert result["applied"] is False
    assert result["after"] == 1  # still mapped afresh, as the user's threshold says
