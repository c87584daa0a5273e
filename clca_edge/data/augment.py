"""Training augmentation presets (``train --augment field|weak|none``) and the field transform.

A preset is data: one named set of strengths, recorded in the checkpoint (``extra.augment``) and
copied by ``deploy`` into the bundle manifest, so a bundle says what its model was trained to
withstand.

- ``field`` (the default): what a field camera does to a leaf photo all day, on 60% of the images
  (the other 40% get only the crop and flip, as a clean photo would). Geometric: random
  crop, horizontal flip, rotation at any angle (leaves have no up; with the flip this also covers
  vertical flips), zoom (mostly out) and a small shift and perspective, the uncovered area filled
  with the image's own border colour (the background), not black. Photometric: exposure (a gain),
  contrast, saturation, now and then greyscale (the leaf's own colour gone: a model that reads the
  cultivar from its tint alone is lost when a dull light or a cheap sensor takes the tint away), a
  small hue shift, and white balance as a per-channel gain (which may tint that grey, as a coloured
  light would). Camera: blur,
  sensor noise, JPEG compression. Built on torchvision's transforms v2: its pipeline
  (``Compose``/``RandomApply``/``RandomCrop``/``RandomHorizontalFlip``/``ToDtype``/``Normalize``),
  ``ColorJitter``, ``RandomGrayscale`` and ``gaussian_noise``; six small ``v2.Transform`` subclasses
  add what v2 lacks, deprecates or runs slowly on one CPU thread, with their kernels from
  ``core.imageops`` (OpenCV; the field suite's and the preprocessing's operations too):
  background-filled pose (one warp), per-channel gain, noise of random strength, blur, hue, JPEG.
- With ``train --consistency`` (the default) a field preset is not fitted as labelled images:
  ``ConsistencyViews`` gives each image's clean crop (the label's) and the same crop through the
  preset, and the trainer asks for the same prediction on both (training.losses).
- ``weak``: the paper's recipe (``train/*.yaml``): random crop + horizontal flip
  (``transforms.TrainTransform``, unchanged).
- ``none``: the evaluation transform (resize + centre crop), no randomness.

Every transform takes the decoded RGB uint8 (H, W, 3) image and returns the normalised float32
(3, img_size, img_size) tensor the model eats; all of them first resize the shorter side as the
evaluation transform does, so strengths are relative to what the model sees, whatever the photo's
resolution.

Randomness comes ONLY from torch's global generator (``torch.rand``/``randint``/``randn``, as
torchvision v2 draws), never numpy's or Python's: the trainer reseeds torch per epoch (and a
dataset may reseed it per sample), and that alone must fix every draw, so runs are reproducible
under a seed and exact on ``--resume``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..core.errors import ConfigError
from ..core.preprocess import PreprocessSpec, frame_leaf, levels, normalize, resize_shorter

if TYPE_CHECKING:
    import torch

AUGMENT_CHOICES = ("field", "weak", "none")
DEFAULT_AUGMENT = "field"


@dataclass(frozen=True)
class AugmentPreset:
    """Strengths of one preset. Ranges are (low, high) drawn uniformly; ``*_p`` is the probability
    that a step is applied to an image at all. Blur sigma is a fraction of the crop side and noise
    sigma a fraction of full scale, so both mean the same at 96 px and at 448 px."""

    name: str
    description: str
    # share of images that get only the crop and flip (the clean photo the camera may also deliver)
    clean_p: float = 0.0
    random_crop: bool = True          # random img_size crop of the resized image (else centre crop)
    flip: bool = True                 # horizontal flip with probability TrainConfig.hflip
    # geometric
    rotate: float = 0.0               # |angle| up to this many degrees (180: any angle)
    zoom: tuple[float, float] = (1.0, 1.0)  # content scale; < 1 zooms out onto the background colour
    translate: float = 0.0            # shift up to this fraction of the side
    perspective: float = 0.0          # v2.RandomPerspective distortion scale
    perspective_p: float = 0.0
    # photometric
    photometric_p: float = 0.0        # exposure / contrast / saturation (v2.ColorJitter, random order)
    exposure: tuple[float, float] = (1.0, 1.0)
    contrast: tuple[float, float] = (1.0, 1.0)
    saturation: tuple[float, float] = (1.0, 1.0)
    hue: float = 0.0                  # shift up to this fraction of the colour wheel
    hue_p: float = 0.0
    # v2.RandomGrayscale after exposure/contrast/saturation: the leaf's own colour gone (the white
    # balance and hue steps that follow may tint the grey, as a coloured light would)
    grayscale_p: float = 0.0
    channel_gain: float = 0.0         # white balance: each channel x [1 - g, 1 + g]
    channel_gain_p: float = 0.0
    # white balance along the warm-cool axis a light's colour temperature moves it (red and blue
    # in opposite directions, as the suite's wb_warm / wb_cool): red x (1 + t), blue x (1 - t),
    # |t| up to this, with channel_gain_p, on top of the per-channel gain (the tint)
    warm_cool: float = 0.0
    # camera
    blur_sigma: tuple[float, float] = (0.0, 0.0)
    blur_p: float = 0.0
    noise_sigma: tuple[float, float] = (0.0, 0.0)
    noise_p: float = 0.0
    jpeg_quality: tuple[int, int] = (100, 100)
    jpeg_p: float = 0.0

    @property
    def only_crop_and_flip(self) -> bool:
        """True when nothing beyond crop/flip is on (the paper's weak recipe or none)."""
        return all(getattr(self, f) == 0 for f in ("perspective_p", "photometric_p", "grayscale_p", "hue_p",
                                                   "channel_gain_p", "blur_p", "noise_p", "jpeg_p")) \
            and self.rotate == 0 and self.zoom == (1.0, 1.0) and self.translate == 0

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def strengths(self) -> dict[str, Any]:
        """What the transform does: every field but the name and the description."""
        return {k: v for k, v in self.to_dict().items() if k not in ("name", "description")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AugmentPreset":
        """The preset a checkpoint recorded (``to_dict``), strengths as recorded: a checkpoint
        keeps meaning what it was trained with if the named preset changes later. Fields this
        version does not know are a ConfigError (their effect could not be reproduced)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown or "name" not in d:
            raise ConfigError(f"augmentation preset record {d.get('name', '?')!r}: "
                              + (f"unknown field(s) {unknown} (recorded by a newer clca-edge: upgrade to use "
                                 "this checkpoint)" if unknown else "no name"))
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


PRESETS: dict[str, AugmentPreset] = {
    # Ranges reach about the middle-to-severe levels of the robustness suite (robustness/suite.py):
    # exposure x0.45-1.6, white balance +-20%, zoom-out to 55%, JPEG down to quality 15. 40% of the
    # images get only the crop and flip: trained on field images alone, a small model learns the
    # cultivars' fine traits far more slowly (BENCHMARKS.md, synthetic leaves with grey world, seed
    # 0: 61% clean without the share, 89% with it).
    "field": AugmentPreset(
        name="field", clean_p=0.4,
        description="field camera on 60% of the images: any rotation, zoom-out on the background colour, exposure, "
                    "contrast, saturation, greyscale, hue, white balance, blur, noise, JPEG; crop and flip only on the "
                    "rest",
        rotate=180.0, zoom=(0.55, 1.1), translate=0.05, perspective=0.2, perspective_p=0.25,
        photometric_p=0.8, exposure=(0.45, 1.6), contrast=(0.4, 1.25), saturation=(0.35, 1.3),
        hue=0.02, hue_p=0.3, grayscale_p=0.15, channel_gain=0.1, channel_gain_p=0.8, warm_cool=0.25,
        blur_sigma=(0.002, 0.015), blur_p=0.2, noise_sigma=(0.005, 0.07), noise_p=0.3,
        jpeg_quality=(15, 95), jpeg_p=0.5,
    ),
    "weak": AugmentPreset(name="weak", description="the paper's recipe: random crop, horizontal flip"),
    "none": AugmentPreset(name="none", description="no augmentation: resize and centre crop as at evaluation",
                          random_crop=False, flip=False),
}


def get_preset(name: str) -> AugmentPreset:
    if name not in PRESETS:
        raise ConfigError(f"--augment {name!r}; choose one of {', '.join(AUGMENT_CHOICES)}")
    return PRESETS[name]


def _v2():
    # torch/torchvision are imported on first use: the presets (and the CLI's --augment choices)
    # must be readable without them.
    import torchvision.transforms.v2 as v2
    import torchvision.transforms.v2.functional as F

    return v2, F


def _make_transforms():
    """The field preset's own v2 transforms (data.field_transforms, which imports torchvision)."""
    from . import field_transforms as t

    return t.RandomPoseOnBackground, t.RandomChannelGain, t.RandomNoise, t.RandomJpeg, t.RandomBlur, t.RandomHue


class FieldTransform:
    """A preset's pipeline on torchvision v2, applied to the resized image at model resolution.
    Crop, flip and pose on uint8, float [0, 1] from the photometric steps on (v2's kernels are
    several times faster on float than on uint8);
    JPEG round-trips through uint8 as a camera does. Camera steps run in a camera's order: blur
    (optics), noise (sensor), then compression. Last, the spec's framing and colour constancy, on
    the augmented crop, as the device applies them to what its camera delivers.

    Two stages: ``crop`` (random crop and flip) and ``perturb`` (everything a field camera adds),
    so ``ConsistencyViews`` can perturb the very crop it also shows clean."""

    def __init__(self, spec: PreprocessSpec, preset: AugmentPreset, hflip: float = 0.5) -> None:
        import torch

        v2, _ = _v2()
        self.spec, self.preset = spec, preset
        size = spec.img_size
        crop: list[Any] = [v2.RandomCrop(size) if preset.random_crop else v2.CenterCrop(size)]
        if preset.flip and hflip > 0:
            crop.append(v2.RandomHorizontalFlip(hflip))
        self.crop = v2.Compose(crop)
        self.perturb = v2.Compose(_perturb_steps(preset))
        # The clean share: the paper's weak crop + flip, on uint8 through core.preprocess (the
        # device's own framing and normalisation, exactly; a third of the field pipeline's cost).
        from .transforms import EvalTransform, TrainTransform

        self.clean_transform = (TrainTransform(spec, hflip if preset.flip else 0.0) if preset.random_crop
                                else EvalTransform(spec))
        self._mean = torch.tensor(spec.mean, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(spec.std, dtype=torch.float32)[:, None, None]

    def _draw(self, rgb: np.ndarray):
        """One image's draws: (uint8 HWC crop, None) for the clean share, else (None, the float
        [0, 1] CHW augmented crop); before framing, colour constancy and normalisation."""
        import torch

        if self.preset.clean_p > 0 and float(torch.rand(())) < self.preset.clean_p:
            return self.clean_transform.view(rgb), None
        chw = _as_image(resize_shorter(rgb, self.spec))
        return None, self.perturb(self.crop(chw)).as_subclass(torch.Tensor)

    def perturbed(self, crop: np.ndarray) -> "torch.Tensor":
        """The field camera's perturbations of a uint8 HWC crop (always applied: no clean share),
        as the float [0, 1] CHW crop before framing, colour constancy and normalisation."""
        import torch

        return self.perturb(_as_image(crop)).as_subclass(torch.Tensor)

    def view(self, rgb: np.ndarray) -> np.ndarray:
        """What this preset makes of ``rgb`` as uint8 HWC, before framing and normalisation: the
        photo a field camera would have delivered (deploy measures these for the capture guard's
        reference, so frames like those the model was trained on are judged)."""
        import torch

        with _one_thread():
            crop, x = self._draw(rgb)
        if crop is not None:
            return crop
        return np.ascontiguousarray((x.permute(1, 2, 0) * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8).numpy())

    def clean_input(self, crop: np.ndarray) -> "torch.Tensor":
        """A uint8 HWC crop exactly as the weak transform and the device preprocess it."""
        import torch

        return torch.from_numpy(normalize(frame_leaf(crop, self.spec), self.spec))

    def model_input(self, x: "torch.Tensor") -> "torch.Tensor":
        """A float [0, 1] CHW augmented crop framed, colour-corrected and normalised as the device
        will treat what its camera delivers (core.preprocess on the float crop)."""
        import torch

        if self.spec.framing != "none":
            hwc = frame_leaf(np.ascontiguousarray(x.permute(1, 2, 0).numpy()), self.spec)
            x = torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))
        gains, shifts = (torch.from_numpy(v.astype(np.float32))[:, None, None]
                         for v in levels(x.numpy(), self.spec, chw=True))
        # ((x * gain + shift) - mean) / std as one fused multiply-add per pixel
        return torch.addcmul((shifts / 255.0 - self._mean) / self._std, x, gains / self._std)

    def __call__(self, rgb: np.ndarray) -> "torch.Tensor":
        with _one_thread():
            crop, x = self._draw(rgb)
            return self.clean_input(crop) if crop is not None else self.model_input(x)


# AugMix's own Dirichlet and Beta concentration (Hendrycks et al. 2020, their default), not tuned here.
AUGMIX_ALPHA = 1.0


class ConsistencyViews:
    """Two views of one image for consistency training (``train --consistency``): the paper's weak
    crop and flip, and the same crop through the preset's field perturbations (always: the clean
    share is the first view). Returns a (2, 3, img_size, img_size) tensor, clean view first. The
    clean view carries the label; the model is asked to give the perturbed one the same
    prediction (AugMix's Jensen-Shannon consistency), so the perturbations are learned without
    being fitted as hard labels."""

    def __init__(self, spec: PreprocessSpec, preset: AugmentPreset, hflip: float = 0.5, mix_width: int = 0) -> None:
        self.field = FieldTransform(spec, preset, hflip)
        self.spec, self.preset = spec, preset
        # AugMix (``train --consistency-mix``): 0, one perturbed view, the field chain itself; k > 0,
        # two perturbed views, each the clean crop mixed with k field chains (AUGMIX_ALPHA).
        self.mix_width = mix_width
        self.views = 3 if mix_width > 0 else 2

    def view(self, rgb: np.ndarray) -> np.ndarray:
        return self.field.view(rgb)

    def augmix(self, crop: np.ndarray) -> "torch.Tensor":
        """AugMix's mixed view (Hendrycks et al. 2020, alpha 1): mix_width field chains of the crop
        with Dirichlet weights, then blended with the clean crop by a Beta weight, in [0, 1] pixel
        space. The weights come from torch's generator, as every other draw here (deterministic
        per seed and worker)."""
        import torch

        a = torch.full((self.mix_width,), AUGMIX_ALPHA)
        w = torch.distributions.Dirichlet(a).sample()
        m = float(torch.distributions.Beta(AUGMIX_ALPHA, AUGMIX_ALPHA).sample())
        chains = sum(float(w[i]) * self.field.perturbed(crop) for i in range(self.mix_width))
        clean = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float() / 255.0
        return clean * (1.0 - m) + chains * m

    def __call__(self, rgb: np.ndarray) -> "torch.Tensor":
        import torch

        with _one_thread():
            crop = self.field.clean_transform.view(rgb)
            clean = self.field.clean_input(crop)
            if self.mix_width > 0:
                return torch.stack([clean] + [self.field.model_input(self.augmix(crop)) for _ in range(2)])
            return torch.stack([clean, self.field.model_input(self.field.perturbed(crop))])


def _as_image(hwc: np.ndarray):
    import torch
    from torchvision import tv_tensors

    return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1).contiguous())


def _perturb_steps(p: AugmentPreset) -> list[Any]:
    """The preset's field-camera steps after the crop and flip, in a camera's order."""
    import torch

    v2, _ = _v2()
    pose, gain, noise, jpeg, blur, hue = _make_transforms()
    steps: list[Any] = []
    if p.rotate or p.zoom != (1.0, 1.0) or p.translate or p.perspective_p:
        # on uint8, before the float conversion: OpenCV's warp of a quarter of the bytes
        steps.append(pose(p.rotate, p.zoom, p.translate, p.perspective, p.perspective_p))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if p.photometric_p:
        steps.append(v2.RandomApply([v2.ColorJitter(brightness=p.exposure, contrast=p.contrast,
                                                    saturation=p.saturation)], p=p.photometric_p))
    if p.grayscale_p:
        steps.append(v2.RandomGrayscale(p.grayscale_p))
    if p.channel_gain_p:
        steps.append(gain(p.channel_gain, p.channel_gain_p, p.warm_cool))
    if p.hue_p:
        steps.append(hue(p.hue, p.hue_p))
    if p.blur_p:
        steps.append(blur(p.blur_sigma, p.blur_p))
    if p.noise_p:
        steps.append(noise(p.noise_sigma, p.noise_p))
    if p.jpeg_p:
        steps.append(jpeg(p.jpeg_quality, p.jpeg_p))
    return steps


@contextmanager
def _one_thread():
    """One torch thread while an image is augmented. One image is far too small for intra-op
    threads: with them (the main process when --workers 0) the affine grid's bmm and the blur's
    conv2d wait on each other, 20x slower on a busy 2-core machine. DataLoader workers run one
    thread already."""
    import torch

    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def build_train_transform(preset: "str | AugmentPreset", spec: PreprocessSpec, hflip: float = 0.5
                          ) -> Callable[[np.ndarray], "torch.Tensor"]:
    """The training transform of ``preset`` (a name or a recorded preset): ``weak`` is today's
    crop + flip (``TrainTransform``), ``none`` the evaluation transform, anything else a
    ``FieldTransform``. Each also has ``view(rgb)``: its uint8 crop before framing and
    normalisation."""
    from .transforms import EvalTransform, TrainTransform

    if isinstance(preset, str):
        preset = get_preset(preset)
    if preset.only_crop_and_flip:
        if not preset.random_crop and not preset.flip:
            return EvalTransform(spec)
        return TrainTransform(spec, hflip if preset.flip else 0.0)
    return FieldTransform(spec, preset, hflip)


__all__ = ["AUGMENT_CHOICES", "AugmentPreset", "ConsistencyViews", "DEFAULT_AUGMENT", "FieldTransform", "PRESETS",
           "build_train_transform", "get_preset"]
