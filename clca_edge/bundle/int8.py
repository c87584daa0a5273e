"""The manifest's ``int8`` section: which INT8 file ONNX Runtime CPU runs, its flavour, and the
instruction set of the CPU deploy gated it on.

INT8 kernels differ per instruction set (x86 without VNNI adds u8 x s8 pairs in saturating 16-bit
lanes; VNNI and ARM accumulate in 32 bits), so a bundle says which CPU its INT8 figures come from,
and whether its CPU file is safe on the others (``x86_non_vnni_safe``: 7-bit weights). A jetson-orin
bundle has two INT8 files: ``int8`` (TensorRT's Q/DQ shape) and ``int8-cpu`` (the device's ONNX
Runtime CPU fallback); ``cpu_variant`` names the one ORT CPU runs. Torch-free; imports only ``core``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..core.cpuinfo import CpuInfo, cpu_info


def int8_isa(cpu: Optional[CpuInfo] = None) -> str:
    """The instruction set ONNX Runtime's INT8 GEMM picks on ``cpu`` (this one by default), in words."""
    cpu = cpu or cpu_info()
    has = cpu.has
    arch = cpu.arch or "unknown"
    if has("avx512_vnni"):
        return f"{arch} avx512_vnni"
    if has("avx_vnni"):
        return f"{arch} avx_vnni"
    if has("avx512bw") or has("avx512f"):
        return f"{arch} avx512 (no VNNI: u8s8 pair sums saturate at 16 bits)"
    if has("avx2"):
        return f"{arch} avx2 (no VNNI: u8s8 pair sums saturate at 16 bits)"
    if has("asimddp"):
        return f"{arch} neon dotprod" + (" i8mm" if has("i8mm") else "")
    if has("asimd"):
        return f"{arch} neon"
    return arch


def _str(d: Dict[str, Any], key: str) -> str:
    v = d[key]
    if not isinstance(v, str):
        raise TypeError(f"{key} must be a string, not {type(v).__name__}")
    return v


@dataclass(frozen=True)
class CpuRecord:
    model: str
    arch: str
    isa: str
    notable_flags: List[str] = field(default_factory=list)

    @classmethod
    def here(cls) -> "CpuRecord":
        cpu = cpu_info()
        return cls(cpu.model, cpu.arch, int8_isa(cpu), cpu.notable())

    def to_dict(self) -> Dict[str, Any]:
        return {"model": self.model, "arch": self.arch, "isa": self.isa, "notable_flags": list(self.notable_flags)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "CpuRecord":
        flags = d.get("notable_flags", [])
        if not isinstance(flags, list):
            raise TypeError("notable_flags must be a list")
        return cls(_str(d, "model"), _str(d, "arch"), _str(d, "isa"), [str(f) for f in flags])


@dataclass(frozen=True)
class Int8Record:
    cpu_variant: str          # the variant ONNX Runtime CPU runs for --precision int8 / auto
    cpu_flavour: str          # deploy.quantize flavour of that file
    x86_non_vnni_safe: bool   # its weights cannot saturate x86 CPUs without VNNI (7-bit or uint8)
    deploy_cpu: CpuRecord     # where the gate measured it
    tensorrt_variant: Optional[str] = None  # jetson-orin: the Q/DQ file TensorRT builds int8 engines from
    extra: Dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"cpu_variant": self.cpu_variant, "cpu_flavour": self.cpu_flavour,
                             "x86_non_vnni_safe": self.x86_non_vnni_safe, "deploy_cpu": self.deploy_cpu.to_dict()}
        if self.tensorrt_variant is not None:
            d["tensorrt_variant"] = self.tensorrt_variant
        for k, v in self.extra.items():
            d.setdefault(k, v)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Int8Record":
        safe = d["x86_non_vnni_safe"]
        if not isinstance(safe, bool):
            raise TypeError("x86_non_vnni_safe must be a boolean")
        cpu = d["deploy_cpu"]
        if not isinstance(cpu, dict):
            raise TypeError("deploy_cpu must be an object")
        trt = d.get("tensorrt_variant")
        known = {"cpu_variant", "cpu_flavour", "x86_non_vnni_safe", "deploy_cpu", "tensorrt_variant"}
        return cls(_str(d, "cpu_variant"), _str(d, "cpu_flavour"), safe, CpuRecord.from_dict(cpu),
                   trt if isinstance(trt, str) else None, {k: v for k, v in d.items() if k not in known})


__all__ = ["CpuRecord", "Int8Record", "int8_isa"]
