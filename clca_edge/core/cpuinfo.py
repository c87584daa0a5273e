"""What CPU this is: model name, architecture and instruction-set flags, read once per process.

INT8 kernels differ per instruction set (AVX2 u8s8 saturates, AVX512-VNNI does not, ARM has its
own dot-product paths), so anything that depends on what the CPU computes (the device self-check's
cache key, INT8 flavour choice) keys on this. Linux reads ``/proc/cpuinfo`` (x86 ``flags``, ARM
``Features``); elsewhere ``platform`` answers with less detail. Torch- and numpy-free, cheap.
"""

from __future__ import annotations

import functools
import hashlib
import platform
from dataclasses import dataclass
from typing import Optional

# Instruction-set flags that change what integer/float kernels do (shown by name; the key hashes all).
NOTABLE_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm", "sve")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str
    flags: tuple[str, ...]   # sorted, de-duplicated

    @property
    def flags_sha256(self) -> str:
        return hashlib.sha256(" ".join(self.flags).encode()).hexdigest()

    def has(self, flag: str) -> bool:
        return flag in self.flags

    def notable(self) -> list[str]:
        return [f for f in NOTABLE_FLAGS if f in self.flags]

    def to_dict(self) -> dict:
        return {"model": self.model, "arch": self.arch, "flags_sha256": self.flags_sha256,
                "notable_flags": self.notable()}


def parse_cpuinfo(text: str, arch: str = "") -> CpuInfo:
    """``/proc/cpuinfo`` text -> CpuInfo (first processor's model; flags of the first block)."""
    model: Optional[str] = None
    flags: Optional[str] = None
    part = implementer = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "hardware", "cpu model") and model is None and value:
            model = value
        elif key in ("flags", "features") and flags is None:
            flags = value
        elif key == "cpu part" and part is None:
            part = value
        elif key == "cpu implementer" and implementer is None:
            implementer = value
    if model is None and part is not None:  # ARM (e.g. Jetson Orin): no model name line
        model = f"ARM implementer {implementer or '?'} part {part}"
    return CpuInfo(model or "unknown", arch, tuple(sorted(set((flags or "").split()))))


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    arch = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpuinfo(f.read(), arch)
    except OSError:
        return CpuInfo(platform.processor() or "unknown", arch, ())


__all__ = ["CpuInfo", "NOTABLE_FLAGS", "cpu_info", "parse_cpuinfo"]
