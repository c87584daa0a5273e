"""A synthetic ultra-fine-grained leaf dataset, drawn with numpy/OpenCV.

Every image is a leaf of the same outline family (elliptic blade, pointed tip, petiole, midrib and
secondary veins) on a soil-like background. Classes ("cultivars") differ only in subtle traits:
secondary-vein angle, margin serration, blade texture and tint; each image also varies in pose,
size, lighting and small trait jitter. Seeded and deterministic: the same arguments write the same
pixels. It feeds tests and the quick start; it is no substitute for real leaf photos.
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..core.errors import ConfigError, OutputError
from ..core.atomic_io import make_temp_dir
from ..core.output_paths import is_empty_dir, refuse_enclosing, replace_dir

log = logging.getLogger(__name__)

FORMATS = ("png", "jpg")


@dataclass(frozen=True)
class LeafTraits:
    """What tells one synthetic cultivar from another."""

    vein_angle: float  # degrees between secondary veins and the midrib
    teeth: int  # serration teeth along each margin (0: smooth)
    tooth_depth: float  # fraction of the half-width a tooth cuts in
    texture_freq: float  # blade texture cycles across the leaf
    texture_amp: float  # blade texture contrast
    hue: float  # blade hue in degrees (greens)
    saturation: float


@dataclass(frozen=True)
class SynthConfig:
    classes: int = 4
    per_class: int = 20
    size: int = 64
    seed: int = 0
    val_fraction: float = 0.25
    fmt: str = "png"
    # False: every cultivar has the same blade hue and saturation (per-image jitter only), so only
    # shape and texture tell them apart, as in ampelography; colour is then no cue for a model to
    # lean on, and a white-balance shift takes nothing that identifies a class.
    tint: bool = True

    def __post_init__(self) -> None:
        if self.classes < 2:
            raise ConfigError(f"--classes {self.classes}: a classification dataset needs at least 2 classes")
        if self.per_class < 2:
            raise ConfigError(f"--per-class {self.per_class}: need at least 2 images per class (train and val)")
        if self.size < 16:
            raise ConfigError(f"--size {self.size} is too small to draw a leaf; use 16 or more pixels")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction {self.val_fraction} is outside (0, 1)")
        if self.fmt not in FORMATS:
            raise ConfigError(f"format {self.fmt!r}; choose one of {', '.join(FORMATS)}")

    @property
    def num_val(self) -> int:
        """Validation images per class: at least one, and at least one left for training."""
        return min(self.per_class - 1, max(1, round(self.per_class * self.val_fraction)))


def class_traits(num_classes: int, seed: int = 0, tint: bool = True) -> list[LeafTraits]:
    """Distinct trait combinations: each trait spans its range in evenly spaced levels, and the
    levels are shuffled independently per trait, so no single trait alone names every class.
    ``tint=False``: hue and saturation at the middle of their ranges for every class (the other
    traits are those of ``tint=True``)."""
    rng = np.random.default_rng([seed, 7919])

    def levels(lo: float, hi: float) -> np.ndarray:
        return rng.permutation(np.linspace(lo, hi, num_classes))

    angle, teeth, depth = levels(30, 70), levels(0, 14), levels(0.0, 0.22)
    tex_f, tex_a = levels(2, 9), levels(0.03, 0.18)
    hue, sat = levels(85, 118), levels(0.5, 0.72)
    if not tint:
        hue, sat = np.full(num_classes, (85 + 118) / 2), np.full(num_classes, (0.5 + 0.72) / 2)
    return [
        LeafTraits(float(angle[i]), int(round(teeth[i])), float(depth[i]), float(tex_f[i]), float(tex_a[i]),
                   float(hue[i]), float(sat[i]))
        for i in range(num_classes)
    ]


def _rgb(hue_deg: float, sat: float, val: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb((hue_deg % 360) / 360.0, min(max(sat, 0), 1), min(max(val, 0), 1)),
                      np.float32)


def _blade_outline(t: LeafTraits, n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Outline in leaf coordinates (u along the midrib 0..1, v across), and the half-width profile."""
    u = np.linspace(0.0, 1.0, n)
    half = 0.28 * np.sin(np.pi * u) ** 0.75 * (1.0 - 0.35 * u)
    if t.teeth > 0 and t.tooth_depth > 0:
        phase = (u * t.teeth) % 1.0
        half = half * (1.0 - t.tooth_depth * phase)  # saw teeth pointing to the tip
    right = np.stack([u, half], 1)
    left = np.stack([u[::-1], -half[::-1]], 1)
    return np.concatenate([right, left]), half


def draw_leaf(traits: LeafTraits, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 image (size x size) of a leaf with ``traits``, posed and lit at random."""
    ss = 2  # draw at twice the size, then area-downsample: cheap anti-aliasing
    s = size * ss
    jit = lambda v, a: v + rng.uniform(-a, a)  # noqa: E731  (small per-image trait jitter)
    t = LeafTraits(jit(traits.vein_angle, 2.5), traits.teeth, max(0.0, jit(traits.tooth_depth, 0.015)),
                   jit(traits.texture_freq, 0.4), traits.texture_amp, jit(traits.hue, 4.0),
                   jit(traits.saturation, 0.05))

    # Soil-like background: brown-grey, low-frequency blotches.
    bg = _rgb(rng.uniform(20, 45), rng.uniform(0.2, 0.45), rng.uniform(0.3, 0.55))
    blotch = cv2.resize(rng.uniform(-0.12, 0.12, (6, 6)).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
    img = np.clip(bg[None, None, :] * (1.0 + blotch[..., None]), 0, 1)

    # Pose: the leaf spans most of the frame, rotated, slightly off-centre.
    length = s * rng.uniform(0.72, 0.88)
    theta = rng.uniform(0, 2 * np.pi)
    base = np.array([s / 2, s / 2]) - 0.5 * length * np.array([math.cos(theta), math.sin(theta)])
    base += rng.uniform(-0.04, 0.04, 2) * s
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])

    def to_px(uv: np.ndarray) -> np.ndarray:
        return (base + (uv * length) @ rot.T).astype(np.float32)

    outline, half = _blade_outline(t)
    mask = np.zeros((s, s), np.uint8)
    cv2.fillPoly(mask, [np.round(to_px(outline) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)

    # Blade colour with texture: stripes across the blade at the cultivar's frequency.
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    along = ((xx - base[0]) * math.cos(theta) + (yy - base[1]) * math.sin(theta)) / length
    across = (-(xx - base[0]) * math.sin(theta) + (yy - base[1]) * math.cos(theta)) / length
    tex = np.sin(2 * np.pi * t.texture_freq * (along + 0.6 * np.abs(across)) + rng.uniform(0, 2 * np.pi))
    light = 1.0 + 0.15 * (along - 0.5) * rng.uniform(-1, 1)
    blade = _rgb(t.hue, t.saturation, rng.uniform(0.45, 0.62))
    blade_img = blade[None, None, :] * (light * (1.0 + t.texture_amp * tex))[..., None]

    # Veins: midrib plus secondary veins leaving it at the cultivar's angle, lighter than the blade.
    veins = np.zeros((s, s), np.uint8)
    width = max(1, int(round(s / 100)))
    cv2.line(veins, tuple(np.round(to_px(np.array([0.0, 0.0]))).astype(int)),
             tuple(np.round(to_px(np.array([0.97, 0.0]))).astype(int)), 255, width + 1, cv2.LINE_AA)
    a = math.radians(t.vein_angle)
    for u0 in np.linspace(0.12, 0.82, 7):
        reach = 0.3
        for side in (1.0, -1.0):
            end = np.array([u0 + reach * math.cos(a), side * reach * math.sin(a)])
            cv2.line(veins, tuple(np.round(to_px(np.array([u0, 0.0]))).astype(int)),
                     tuple(np.round(to_px(end)).astype(int)), 255, width, cv2.LINE_AA)
    vein_colour = _rgb(t.hue + 8, t.saturation * 0.5, 0.85)
    v = (veins.astype(np.float32) / 255.0)[..., None]
    blade_img = blade_img * (1 - 0.7 * v) + vein_colour[None, None, :] * 0.7 * v

    # Petiole below the base, then composite.
    petiole = np.zeros((s, s), np.uint8)
    cv2.line(petiole, tuple(np.round(to_px(np.array([-0.12, 0.0]))).astype(int)),
             tuple(np.round(to_px(np.array([0.02, 0.0]))).astype(int)), 255, width + 1, cv2.LINE_AA)
    m = (np.maximum(mask, petiole).astype(np.float32) / 255.0)[..., None]
    img = img * (1 - m) + np.clip(blade_img, 0, 1) * m
    img = np.clip(img + rng.normal(0, 0.015, img.shape), 0, 1)  # sensor noise
    img = cv2.resize((img * 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_AREA)
    return img


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    class_names: list[str]
    train_images: int
    val_images: int


def class_name(i: int) -> str:
    return f"cultivar_{i:02d}"


# Left in every data set written here: what --force may replace (see write_synthetic_dataset).
SYNTH_MARKER = ".clca-edge-synth.json"


def is_synthetic_dataset(folder) -> bool:
    """A folder ``data synth`` wrote and nobody added to: its marker, and only train/ and val/ besides."""
    folder = Path(folder)
    return (folder / SYNTH_MARKER).is_file() and {p.name for p in folder.iterdir()} <= {"train", "val", SYNTH_MARKER}


def _check_out(out: Path, force: bool) -> None:
    refuse_enclosing(out, "--out")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is a file; choose a new folder")
    if not out.is_dir() or is_empty_dir(out):
        return
    if not is_synthetic_dataset(out):
        raise OutputError(f"--out {out} is not empty and not a data set written by `clca-edge data synth`: writing "
                          "into it would mix two data sets, and --force replaces only a synthetic data set; "
                          "choose a new folder")
    if not force:
        raise OutputError(f"--out {out} already holds a synthetic data set; pass --force to replace it, or choose "
                          "a new folder")


def write_synthetic_dataset(out, config: SynthConfig, force: bool = False) -> SynthSummary:
    """Write ``out/train/<class>/*.png`` and ``out/val/<class>/*.png`` (an ImageFolder tree).

    ``out`` must be new or empty; with ``force`` an earlier synthetic data set there (and only
    that) is replaced whole. The images are written to a temp folder next to ``out`` and swapped
    in at the end, so a failure leaves ``out`` as it was."""
    out = Path(out)
    _check_out(out, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(out.parent, prefix=f".{out.name}.")
    except OSError as e:
        raise OutputError(f"cannot write the data set under {out.parent} ({e.strerror or e}); choose a writable "
                          "--out") from None
    try:
        summary = _write_images(tmp, config)
        (tmp / SYNTH_MARKER).write_text(json.dumps({"written_by": "clca-edge data synth",
                                                     "config": dataclasses.asdict(config)}) + "\n")
        replace_dir(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"cannot write the data set {out} ({e.strerror or e}); choose a writable --out") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %d train and %d val images to %s", summary.train_images, summary.val_images, out)
    return dataclasses.replace(summary, root=out)


def _write_images(out: Path, config: SynthConfig) -> SynthSummary:
    traits = class_traits(config.classes, config.seed, config.tint)
    names = [class_name(i) for i in range(config.classes)]
    n_val = config.num_val
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if config.fmt == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    for ci, (name, tr) in enumerate(zip(names, traits)):
        for split in ("train", "val"):
            (out / split / name).mkdir(parents=True, exist_ok=True)
        for k in range(config.per_class):
            rng = np.random.default_rng([config.seed, ci, k])
            rgb = draw_leaf(tr, config.size, rng)
            split = "val" if k >= config.per_class - n_val else "train"
            path = out / split / name / f"{name}_{k:04d}.{config.fmt}"
            if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
                raise OutputError(f"could not write {path}; is the output folder writable, the disk full?")
    n_train = config.classes * (config.per_class - n_val)
    return SynthSummary(out, names, n_train, config.classes * n_val)
