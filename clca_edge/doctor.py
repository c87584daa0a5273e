"""Environment checks for the field: what a Jetson deployment fails on first.

Every probe reads through a ``System`` object (files under a root, commands, imports) so that
tests can stand up a fake Jetson. Nothing here imports torch or tensorrt: versions come from
package metadata and system files.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from . import __version__

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"

# L4T release -> JetPack release (NVIDIA's release notes).
L4T_TO_JETPACK = {
    "32.7": "4.6", "35.1": "5.0.2", "35.2": "5.1", "35.3": "5.1.1", "35.4": "5.1.2", "35.5": "5.1.3",
    "35.6": "5.1.4", "36.2": "6.0 DP", "36.3": "6.0", "36.4": "6.1/6.2",
}
# JetPack major -> TensorRT shipped and the highest ONNX opset its parser takes.
JETPACK_TENSORRT = {"4": ("8.2", 13), "5": ("8.5", 17), "6": ("8.6 / 10.3", 17)}
MIN_FREE_DISK_MB = 200


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    value: str
    hint: str = ""

    @property
    def blocks_capture(self) -> bool:
        return self.status == FAIL


class System:
    """The machine as the checks see it; tests substitute files, commands and packages."""

    def __init__(self, root: str = "/", run: Optional[Callable[[list[str]], Optional[str]]] = None,
                 packages: Optional[dict[str, Optional[str]]] = None) -> None:
        self.root = Path(root)
        self._run = run
        self._packages = packages

    def read(self, path: str) -> Optional[str]:
        try:
            return (self.root / path.lstrip("/")).read_text(errors="replace")
        except OSError:
            return None

    def glob(self, pattern: str) -> list[str]:
        return sorted("/" + str(p.relative_to(self.root)) for p in self.root.glob(pattern.lstrip("/")))

    def run(self, cmd: list[str]) -> Optional[str]:
        """stdout of ``cmd``, or None if it is missing or fails."""
        if self._run is not None:
            return self._run(cmd)
        if shutil.which(cmd[0]) is None:
            return None
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    def package_version(self, name: str) -> Optional[str]:
        if self._packages is not None:
            return self._packages.get(name)
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    def disk_free_mb(self, path: str) -> float:
        return shutil.disk_usage(path).free / 2**20


def _first_version(system: System, names: tuple[str, ...]) -> Optional[str]:
    for n in names:
        v = system.package_version(n)
        if v:
            return v
    return None


def check_python(system: System) -> list[Finding]:
    out = [Finding("python", OK, f"{platform.python_version()} ({sys.executable})"),
           Finding("clca-edge", OK, __version__)]
    for extra, names in (("train extra (torch)", ("torch",)), ("train extra (timm)", ("timm",)),
                         ("onnx", ("onnx",))):
        v = _first_version(system, names)
        out.append(Finding(extra, OK if v else INFO, v or "not installed",
                           "" if v else "only needed to train or deploy: pip install 'clca-edge[train]'"))
    return out


def check_jetson(system: System) -> list[Finding]:
    text = system.read("/etc/nv_tegra_release")
    if not text:
        return [Finding("L4T / JetPack", INFO, "not a Jetson (no /etc/nv_tegra_release)",
                        "engines built here only run on this GPU; build them on the Jetson")]
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not m:
        return [Finding("L4T / JetPack", WARN, text.strip()[:80], "could not parse /etc/nv_tegra_release")]
    l4t = f"{m.group(1)}.{m.group(2)}"
    major_minor = ".".join(l4t.split(".")[:2])
    jp = L4T_TO_JETPACK.get(major_minor)
    if jp is None:
        return [Finding("L4T / JetPack", WARN, f"L4T {l4t}", "unknown release; JetPack 5 or 6 is supported")]
    trt, opset = JETPACK_TENSORRT.get(jp[0], ("?", 17))
    status = OK if jp[0] in ("5", "6") else WARN
    hint = "" if status == OK else "JetPack 4 (TensorRT 8.2, opset 13) is too old for opset-17 bundles; upgrade"
    return [Finding("L4T / JetPack", status, f"L4T {l4t} -> JetPack {jp} (TensorRT {trt}, opset <= {opset})", hint)]


def check_tensorrt(system: System) -> list[Finding]:
    v = _first_version(system, ("tensorrt", "tensorrt-cu12", "tensorrt_cu12", "tensorrt-libs"))
    if v is None:
        dpkg = system.run(["dpkg-query", "-W", "-f=${Version}", "libnvinfer10"]) or \
            system.run(["dpkg-query", "-W", "-f=${Version}", "libnvinfer8"])
        v = dpkg.strip() if dpkg else None
    if v is None:
        return [Finding("TensorRT", WARN, "not found",
                        "capture falls back to ONNX Runtime; on a Jetson install JetPack's python3-libnvinfer")]
    return [Finding("TensorRT", OK, v)]


def check_cuda(system: System) -> list[Finding]:
    out = []
    smi = system.run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"])
    text = system.read("/usr/local/cuda/version.json")
    cuda = None
    if text:
        m = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"([\d.]+)"', text)
        cuda = m.group(1) if m else None
    if cuda is None:
        nvcc = system.run(["nvcc", "--version"])
        m = re.search(r"release ([\d.]+)", nvcc or "")
        cuda = m.group(1) if m else None
    out.append(Finding("CUDA", OK if cuda else WARN, cuda or "not found",
                       "" if cuda else "no CUDA toolkit: GPU backends unavailable, CPU fallback only"))
    if smi:
        out.append(Finding("GPU", OK, smi.strip().splitlines()[0]))
    return out


def check_onnxruntime(system: System) -> list[Finding]:
    v = _first_version(system, ("onnxruntime", "onnxruntime-gpu"))
    if v is None:
        return [Finding("ONNX Runtime", FAIL, "not installed", "pip install onnxruntime (or JetPack's onnxruntime-gpu wheel)")]
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except Exception as e:  # a broken wheel is a finding, not a crash
        return [Finding("ONNX Runtime", FAIL, f"{v}, import failed: {e}", "reinstall onnxruntime")]
    gpu = [p for p in providers if p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")]
    return [Finding("ONNX Runtime", OK, f"{v}: {', '.join(providers)}"),
            Finding("ONNX Runtime GPU", OK if gpu else WARN, ", ".join(gpu) or "CPU only",
                    "" if gpu else "install onnxruntime-gpu (Jetson Zoo wheel) for a GPU fallback")]


def check_opencv(system: System) -> list[Finding]:
    try:
        import cv2
    except Exception as e:
        return [Finding("OpenCV", FAIL, f"import failed: {e}", "pip install opencv-python-headless")]
    info = cv2.getBuildInformation()

    def flag(name: str) -> bool:
        m = re.search(rf"^\s*{name}:\s*(\S+)", info, re.MULTILINE)
        return bool(m) and m.group(1).upper() not in ("NO", "OFF")

    gst, v4l = flag("GStreamer"), flag("v4l/v4l2") or flag("V4L/V4L2")
    return [
        Finding("OpenCV", OK, cv2.__version__),
        Finding("OpenCV GStreamer", OK if gst else WARN, "yes" if gst else "no",
                "" if gst else "csi:// and rtsp:// sources need an OpenCV built with GStreamer (JetPack's python3-opencv)"),
        Finding("OpenCV V4L2", OK if v4l else WARN, "yes" if v4l else "no",
                "" if v4l else "USB cameras (/dev/videoN) need V4L2 support in OpenCV"),
    ]


def check_cameras(system: System) -> list[Finding]:
    cams = system.glob("/dev/video*")
    return [Finding("cameras", OK if cams else WARN, ", ".join(cams) or "none found",
                    "" if cams else "plug in a camera or use --source with a file/stream")]


def check_disk(system: System, path: str) -> list[Finding]:
    # The log folder may not exist before the first capture: measure the disk it will be on.
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = system.disk_free_mb(str(where))
    except OSError as e:
        return [Finding("free disk", WARN, f"unknown at {path} ({e})", "check the path given to --disk-path")]
    status = FAIL if free < MIN_FREE_DISK_MB else OK
    return [Finding("free disk", status, f"{free:,.0f} MB at {path}",
                    "" if status == OK else f"capture needs >= {MIN_FREE_DISK_MB} MB for its decision log; free space")]


def check_power(system: System) -> list[Finding]:
    out = system.run(["nvpmodel", "-q"])
    if out is None:
        return [Finding("power mode", INFO, "nvpmodel not available")]
    mode = out.strip().splitlines()[0] if out.strip() else "?"
    hint = "" if "MAXN" in out.upper() else "for full speed: sudo nvpmodel -m 0 && sudo jetson_clocks"
    return [Finding("power mode", OK if not hint else WARN, mode, hint)]


def check_swap(system: System) -> list[Finding]:
    text = system.read("/proc/meminfo") or ""
    m = re.search(r"SwapTotal:\s+(\d+)", text)
    if not m:
        return [Finding("swap", INFO, "unknown")]
    total = int(m.group(1)) // 1024
    return [Finding("swap", OK if total else WARN, f"{total} MB",
                    "" if total else "building TensorRT engines on 8 GB Orins can run out of memory without swap")]


def check_cache_dir(path: Optional[str]) -> list[Finding]:
    """This device's cache folder (``runtime/device_cache.py``): where self-check verdicts, CPU
    latencies and the TensorRT engines build-engine builds are kept, so a start after the first one
    runs, times and builds none of them again."""
    import os

    from .runtime.device_cache import default_cache_dir

    folder = Path(path) if path else default_cache_dir()
    where = folder
    while not where.exists() and where != where.parent:
        where = where.parent   # created on the first write: can it be?
    if where.is_dir() and os.access(where, os.W_OK | os.X_OK):
        return [Finding("device cache", OK, str(folder))]
    return [Finding("device cache", WARN, f"{folder} not writable",
                    "every start re-runs the self-check and build-engine cannot keep its engines; set --cache-dir or "
                    "CLCA_EDGE_CACHE_DIR to a writable folder")]


CHECKS = (check_python, check_jetson, check_tensorrt, check_cuda, check_onnxruntime, check_opencv,
          check_cameras, check_power, check_swap)


def run_checks(system: Optional[System] = None, disk_path: str = ".", cache_dir: Optional[str] = None
               ) -> list[Finding]:
    system = system or System()
    findings: list[Finding] = []
    for check in CHECKS:
        findings.extend(check(system))
    findings.extend(check_disk(system, disk_path))
    findings.extend(check_cache_dir(cache_dir))
    return findings


def findings_to_json(findings: list[Finding]) -> list[dict]:
    return [dict(asdict(f), blocks_capture=f.blocks_capture) for f in findings]
