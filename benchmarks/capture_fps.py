"""Capture loop overhead and memory: end-to-end `clca-edge capture` frames/s on a video file
against the bare backend inference rate on the same bundle, and the capture process's peak RSS,
with ONNX Runtime on the CPU, one run; and the cost of the frame-quality guard (capture with
`--quality on` against `--quality off`, same video, same round).

The model is ViT-S/16 with EViT + CLCA at keep rate 0.1, 224 px (random weights: speed and memory
do not depend on them), exported and packed as a bundle. Bare inference and capture are measured
round-robin (--rounds rounds of: bare rate over N frames, then one capture process over the same
N video frames, once with the quality guard off and once on, in alternating order) and the
ratios are the medians of the per-round ratios, so load from other processes on a shared machine
hits every side alike. The bundle gets a quality reference measured from the video's own frames, so
the guard runs every check (the colour distance included) and refuses none of them. Capture runs as its own process (`clca-edge capture`), so its peak RSS is that
of the device command alone (VmHWM of the process, read as it exits).

    python benchmarks/capture_fps.py                 # 5 rounds of 300 frames of 640x480 video
    python benchmarks/capture_fps.py --rounds 3 --frames 100 --json out.json

Rounds of 100 frames (about 1.2 s of bare inference each) were too short: on a quiet machine three
such runs gave medians of 0.80 to 0.97 for the same code, the bare rate alone moving by 20% from
round to round; 5 rounds of 300 frames gave 0.836-0.849 (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_bundle(root: Path, backbone: str, keep_rate: float, img_size: int, num_classes: int) -> Path:
    import torch

    from clca_edge.deploy.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
    from clca_edge.models import create_model
    from clca_edge.core.preprocess import PreprocessSpec
    from clca_edge.bundle import Manifest, Status, TensorSpec, VariantRecord, write_manifest

    torch.manual_seed(0)
    model = create_model(backbone, method="evit", keep_rate=keep_rate, clca=True, num_classes=num_classes,
                         img_size=img_size, pretrained="none")
    root.mkdir(parents=True)
    export_onnx(model, root / "model.onnx")
    classes = [f"cultivar_{i:03d}" for i in range(num_classes)]
    (root / "labels.txt").write_text("\n".join(classes) + "\n")
    spec = PreprocessSpec(img_size=img_size)
    (root / "preprocess.json").write_text(json.dumps(spec.to_dict()))
    write_manifest(root, Manifest(
        class_names=classes, input=TensorSpec(INPUT_NAME, [1, 3, img_size, img_size]), output=TensorSpec(OUTPUT_NAME),
        variants={"fp32": VariantRecord(file="model.onnx", precision="fp32", status=Status.PASSED,
                                        runtime="onnxruntime")},
        default_variant="fp32", model=model.config.to_dict()))
    return root


def make_video(path: Path, n: int, width: int, height: int, fps: float = 30.0) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    for i in range(n):
        frame = np.roll(base, 7 * i, axis=1)   # a moving scene: every frame decodes to new pixels
        cv2.circle(frame, (width // 2, height // 2), 40 + i % 60, (0, 180, 0), -1)
        vw.write(frame)
    vw.release()
    return path


def bare_rate(bundle: Path, n: int, threads: int) -> float:
    """Frames/s of the backend alone: one preprocessed input, inference only."""
    from clca_edge.runtime.backends import select_classifier
    from clca_edge.runtime.model import load_model

    model = load_model(bundle)
    clf = select_classifier(model.files, "ort-cpu", threads=threads).classifier
    x = np.random.default_rng(1).standard_normal((3, model.spec.img_size, model.spec.img_size)).astype(np.float32)
    for _ in range(5):
        clf.logits(x)
    t0 = time.perf_counter()
    for _ in range(n):
        clf.logits(x)
    return n / (time.perf_counter() - t0)


# The child reports its own VmHWM at exit: getrusage() of a forked child also counts the parent's
# pages from before exec (this benchmark holds torch), which would overstate the device command.
CHILD = """
import atexit, os, sys
OUT = sys.argv[1]
def _hwm():
    t = os.times()
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            open(OUT, 'w').write(line.split()[1] + ' ' + repr(t.user + t.system))
atexit.register(_hwm)
sys.argv = ['clca-edge'] + sys.argv[2:]
from clca_edge.cli import main
main()
"""


def add_quality_reference(bundle: Path, video: Path) -> None:
    """Measure the video's frames, decoded as capture decodes them, as deploy measures training
    images and record the reference."""
    from clca_edge.bundle import load_bundle, read_manifest, write_manifest
    from clca_edge.capture.sources import make_source, parse_source
    from clca_edge.core.image_stats import build_reference, measure
    from clca_edge.core.preprocess import resize_center_crop

    m = read_manifest(bundle)
    spec = load_bundle(bundle).preprocess
    source = make_source(parse_source(str(video)))
    source.open()
    measures = []
    while True:
        frame = source.read()
        if frame is None:
            break
        measures.append(measure(resize_center_crop(frame.bgr, spec), bgr=True))
    source.close()
    m.quality_reference = build_reference(measures, f"{len(measures)} frames of {video.name}", spec.img_size)
    write_manifest(bundle, m)


def run_capture(bundle: Path, video: Path, log: Path, threads: int, quality: str = "on"
                ) -> tuple[dict, float, float]:
    """(summary record, peak RSS MB, wall s) of one `clca-edge capture` process."""
    hwm = log.parent / "vmhwm.txt"
    cmd = [sys.executable, "-c", CHILD, str(hwm), "capture", "--bundle", str(bundle),
           "--source", str(video), "--backend", "ort-cpu", "--threads", str(threads), "--log", str(log),
           "--run-dir", str(log.parent / "runs"), "--no-live", "--quality", quality]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"capture failed: {proc.stderr.decode()}")
    from clca_edge.capture.fieldlog import read_log

    recs = list(read_log(log))
    summary = dict(recs[-1])
    # Median per-frame preprocessing (decode excluded): where the guard's measures are paid.
    prep = sorted(r["latency_ms"]["preprocess"] for r in recs if r["type"] == "decision")
    summary["prep_ms_median"] = prep[len(prep) // 2] if prep else None
    kb, cpu_s = hwm.read_text().split()
    # CPU time of the whole process (all threads, start-up included): what a loaded machine's
    # wall-clock fps cannot hide.
    summary["cpu_s"] = float(cpu_s)
    return summary, int(kb) / 1024.0, wall   # VmHWM is in kB


class _MemoryLog:
    """A field log that keeps nothing: the in-process comparison times the loop, not fsync."""

    failures = 0

    def write(self, record: dict) -> None:
        pass


def guard_cost_in_process(bundle: Path, video: Path, reps: int, threads: int) -> dict:
    """Capture loop frames/s with the quality guard on and off in ONE process, sharing one ONNX
    Runtime session, alternating on/off run by run (``reps`` runs of each over the whole video):
    slow changes in machine load hit both alike, and the median per-pair ratio is what is left."""
    from clca_edge.capture.bundle_runtime import BundleRuntime
    from clca_edge.capture.config import CaptureConfig
    from clca_edge.capture.loop import run_capture
    from clca_edge.capture.quality import QualityConfig
    from clca_edge.capture.sources import make_source, parse_source
    from clca_edge.runtime.backends import select_classifier
    from clca_edge.runtime.model import load_model

    model = load_model(bundle)
    sel = select_classifier(model.files, "ort-cpu", threads=threads)
    fps = {"on": [], "off": []}
    for i in range(reps):
        for q in (("off", "on") if i % 2 == 0 else ("on", "off")):
            config = CaptureConfig(quality=QualityConfig(enabled=q == "on"))
            summary = run_capture(BundleRuntime.create(model, sel, config.quality),
                                  make_source(parse_source(str(video))), _MemoryLog(), config)
            if summary.refused:
                raise SystemExit(f"the guard refused {summary.refused} benchmark frames")
            fps[q].append(summary.fps)
    pairs = sorted(on / off for on, off in zip(fps["on"], fps["off"]))
    return {"reps": reps, "fps_on": [round(v, 2) for v in fps["on"]], "fps_off": [round(v, 2) for v in fps["off"]],
            "median_fps_on": round(sorted(fps["on"])[reps // 2], 2),
            "median_fps_off": round(sorted(fps["off"])[reps // 2], 2),
            "median_on_vs_off": round(pairs[len(pairs) // 2], 3),
            "on_vs_off_quartiles": [round(pairs[len(pairs) // 4], 3), round(pairs[(3 * len(pairs)) // 4], 3)]}


def _thread_cpu_s() -> dict[int, float]:
    """CPU seconds (user + system) of every thread of this process, by native thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue   # the thread ended meanwhile
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_by_thread(bundle: Path, video: Path, threads: int) -> dict:
    """Where the CPU goes, per frame, in one process (CPU time: what machine load does not change):
    bare inference, then the capture loop over the video (the loop's thread, which is also ONNX
    Runtime's calling thread; ONNX Runtime's worker threads; the read-ahead thread that decodes and
    preprocesses; the field log's fsync thread), sampled from /proc while it runs."""
    import threading

    from clca_edge.capture.bundle_runtime import BundleRuntime
    from clca_edge.capture.config import CaptureConfig
    from clca_edge.capture.fieldlog import open_log
    from clca_edge.capture.loop import run_capture
    from clca_edge.capture.sources import make_source, parse_source
    from clca_edge.runtime.backends import select_classifier
    from clca_edge.runtime.model import load_model

    model = load_model(bundle)
    sel = select_classifier(model.files, "ort-cpu", threads=threads)
    clf = sel.classifier
    x = np.random.default_rng(1).standard_normal((3, model.spec.img_size, model.spec.img_size)).astype(np.float32)
    for _ in range(5):
        clf.logits(x)
    c0 = time.process_time()
    for _ in range(100):
        clf.logits(x)
    bare_ms = (time.process_time() - c0) * 10.0
    before, names, last, done = _thread_cpu_s(), {}, {}, threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            names.update({t.native_id: t.name for t in threading.enumerate()})
            last.update(_thread_cpu_s())

    sampler = threading.Thread(target=sample, name="sampler", daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp, open_log(Path(tmp) / "log.jsonl") as flog:
        summary = run_capture(BundleRuntime.create(model, sel), make_source(parse_source(str(video))), flog,
                              CaptureConfig())
    done.set()
    sampler.join()
    by_name: dict[str, float] = {}
    for tid, cpu in last.items():
        name = names.get(tid, "onnxruntime worker")
        if name != "sampler":
            by_name[name] = by_name.get(name, 0.0) + cpu - before.get(tid, 0.0)
    return {"bare_inference": round(bare_ms, 2),
            "capture": {n: round(1000.0 * s / summary.frames, 2) for n, s in sorted(by_name.items()) if s > 0},
            "capture_total": round(1000.0 * sum(by_name.values()) / summary.frames, 2)}


def reader_parts(bundle: Path, video: Path, passes: int = 5) -> dict:
    """The read-ahead thread's work per frame, part by part, on this one thread (CPU time by
    ``time.thread_time``, the best of ``passes`` passes over the video): reading and decoding a
    frame, ``resize_center_crop``, the quality guard's measures, ``frame_leaf`` + ``normalize``."""
    from clca_edge.capture.quality import QualityGuard
    from clca_edge.capture.sources import make_source, parse_source
    from clca_edge.core.preprocess import frame_leaf, normalize, resize_center_crop
    from clca_edge.runtime.model import load_model

    model = load_model(bundle)
    spec, guard = model.spec, QualityGuard.for_bundle(model.quality_reference)
    best: dict[str, float] = {}
    for _ in range(passes):
        took = dict.fromkeys(("decode", "resize_center_crop", "guard", "frame_leaf_normalize"), 0.0)
        source, n = make_source(parse_source(str(video))), 0
        source.open()
        while True:
            t0 = time.thread_time()
            frame = source.read()
            t1 = time.thread_time()
            if frame is None:
                break
            crop = resize_center_crop(frame.bgr, spec)
            t2 = time.thread_time()
            guard.check(crop, bgr=True)
            t3 = time.thread_time()
            normalize(frame_leaf(crop, spec), spec, bgr=True)
            t4 = time.thread_time()
            n += 1
            for name, dt_s in zip(took, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                took[name] += dt_s
        source.close()
        for name, total in took.items():
            best[name] = min(best.get(name, math.inf), 1000.0 * total / n)
    best["total"] = sum(best.values())
    return {k: round(v, 3) for k, v in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--keep-rate", type=float, default=0.1)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--num-classes", type=int, default=100)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads for both sides (0: ORT default)")
    ap.add_argument("--guard-reps", type=int, default=10,
                    help="in-process guard on/off runs of each (0: skip that comparison)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = make_bundle(tmp / "bundle", args.model, args.keep_rate, args.img_size, args.num_classes)
        video = make_video(tmp / "field.avi", args.frames, args.width, args.height)
        add_quality_reference(bundle, video)
        rounds = []
        rss = []
        for r in range(args.rounds):
            bare = bare_rate(bundle, args.frames, args.threads)
            runs = {}
            for q in (("off", "on") if r % 2 == 0 else ("on", "off")):
                summary, rss_mb, wall = run_capture(bundle, video, tmp / f"log{r}_{q}.jsonl", args.threads, q)
                if summary["refused"]:
                    raise SystemExit(f"the guard refused {summary['refused']} benchmark frames: "
                                     f"{summary['refused_reasons']}; the on/off comparison needs none refused")
                runs[q] = summary
                rss.append(rss_mb)
            on, off = runs["on"]["fps"], runs["off"]["fps"]
            rounds.append({"bare_fps": round(bare, 2), "capture_fps": on, "capture_fps_quality_off": off,
                           "ratio": round(on / bare, 3), "quality_on_vs_off": round(on / off, 3),
                           "prep_ms_on": runs["on"]["prep_ms_median"], "prep_ms_off": runs["off"]["prep_ms_median"],
                           "cpu_s_on": round(runs["on"]["cpu_s"], 2), "cpu_s_off": round(runs["off"]["cpu_s"], 2),
                           "frames": runs["on"]["frames"]})
            print(f"round {r}: {rounds[-1]}", file=sys.stderr)
        guard = guard_cost_in_process(bundle, video, args.guard_reps, args.threads) if args.guard_reps else None
        print(f"guard in process: {guard}", file=sys.stderr)
        cpu = cpu_by_thread(bundle, video, args.threads)
        print(f"CPU ms per frame: {cpu}", file=sys.stderr)
        parts = reader_parts(bundle, video)
        print(f"read-ahead work per frame, part by part (ms CPU): {parts}", file=sys.stderr)

    import onnxruntime as ort

    from clca_edge.benchmark.report import emit_results, run_header

    ratios = sorted(r["ratio"] for r in rounds)
    result = {
        **run_header(), "onnxruntime": ort.__version__,
        "model": f"{args.model} EViT+CLCA r={args.keep_rate} @ {args.img_size}, {args.num_classes} classes",
        "video": f"{args.frames} frames {args.width}x{args.height} MJPG", "rounds": rounds,
        "median_ratio": ratios[len(ratios) // 2], "peak_rss_mb": round(max(rss), 1),
        "median_quality_on_vs_off": sorted(r["quality_on_vs_off"] for r in rounds)[len(rounds) // 2],
        "guard_in_process": guard, "cpu_ms_per_frame": cpu, "reader_ms_per_frame": parts, "load_average": [round(v, 1) for v in os.getloadavg()],
        "targets": {"ratio": ">= 0.95", "peak_rss_mb": "<= 500", "quality_on_vs_off": ">= 0.95"},
    }
    emit_results(result, args.json)


if __name__ == "__main__":
    main()
