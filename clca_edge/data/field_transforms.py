"""The v2 transforms torchvision's transforms v2 lacks, deprecates or runs slowly on one CPU
thread, for the field preset (data.augment): a background-filled pose (one warp), a per-channel
gain with a warm-cool axis, noise of random strength, blur, hue and JPEG. Their pixel work is
``core.imageops``'; every draw comes from torch's generator (``torch.rand``/``randint``), as
torchvision v2 draws, so a seed alone fixes what they do. Imported by data.augment on first use:
it imports torch and torchvision at the top.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors

from ..core import imageops


def _hwc(inpt) -> np.ndarray:
    return np.ascontiguousarray(inpt.permute(1, 2, 0).numpy())


def _chw(hwc: np.ndarray, like):
    # contiguous CHW: torch's kernels on the channels-last view are several times slower
    # (randn_like on it: 1.0 ms against 0.13 ms at 112 px)
    return tv_tensors.wrap(torch.from_numpy(hwc).permute(2, 0, 1).contiguous(), like=like)


def _draw(p: float, low: float, high: float) -> Optional[float]:
    """With probability ``p`` a value uniform in [low, high), else None (the step is skipped);
    both draws from torch's generator, the apply-or-not one first."""
    if float(torch.rand(())) >= p:
        return None
    return float(low + torch.rand(()) * (high - low))


class RandomPoseOnBackground(v2.Transform):
    """Rotation, zoom and shift, then an occasional small perspective (corners moved as
    v2.RandomPerspective moves them), as ONE OpenCV warp (one interpolation); uncovered pixels
    take the image's border colour. Parameters from torch's generator; OpenCV warps: 10x
    faster than torchvision's grid sampling here, and its constant border blends without the
    dark seam torchvision's bilinear ``fill=`` leaves."""

    def __init__(self, rotate: float, zoom: tuple[float, float], translate: float, perspective: float,
                 perspective_p: float) -> None:
        super().__init__()
        self.rotate, self.zoom, self.translate = rotate, zoom, translate
        self.perspective, self.perspective_p = perspective, perspective_p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = flat_inputs[0].shape[-2:]
        u = torch.rand(4)
        params = {"angle": float((2 * u[0] - 1) * self.rotate),
                  "scale": float(self.zoom[0] + u[1] * (self.zoom[1] - self.zoom[0])),
                  "translate": (float((2 * u[2] - 1) * self.translate * w),
                                float((2 * u[3] - 1) * self.translate * h)),
                  "corners": None}
        if self.perspective_p and float(torch.rand(())) < self.perspective_p:
            bw, bh = int(self.perspective * (w // 2)) + 1, int(self.perspective * (h // 2)) + 1
            dx, dy = torch.randint(0, bw, (4,)).tolist(), torch.randint(0, bh, (4,)).tolist()
            params["corners"] = [[dx[0], dy[0]], [w - 1 - dx[1], dy[1]], [w - 1 - dx[2], h - 1 - dy[2]],
                                 [dx[3], h - 1 - dy[3]]]
        return params

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        h, w = inpt.shape[-2:]
        m = np.eye(3)
        m[:2] = imageops.rotate_zoom_matrix((h, w), params["angle"], params["scale"])
        m[:2, 2] += params["translate"]
        if params["corners"] is not None:
            import cv2

            src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
            m = cv2.getPerspectiveTransform(src, np.float32(params["corners"])) @ m
        return _chw(imageops.warp_on_background(_hwc(inpt), m), inpt)


class RandomBlur(v2.Transform):
    """Gaussian blur (defocus, motion) of a random sigma, a fraction of the side; OpenCV's
    separable kernel (v2.GaussianBlur's conv2d took 40 ms per 224 px image)."""

    def __init__(self, sigma: tuple[float, float], p: float) -> None:
        super().__init__()
        self.sigma, self.p = sigma, p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        fraction = _draw(self.p, *self.sigma)
        return {"sigma": None if fraction is None else fraction * min(flat_inputs[0].shape[-2:])}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["sigma"] is None:
            return inpt
        return _chw(imageops.gaussian_blur(_hwc(inpt), params["sigma"]), inpt)


class RandomChannelGain(v2.Transform):
    """White balance: each channel times its own gain in [1 - g, 1 + g] and, with
    ``warm_cool`` w, red x (1 + t) and blue x (1 - t) for t in [-w, w] (float images)."""

    def __init__(self, gain: float, p: float, warm_cool: float = 0.0) -> None:
        super().__init__()
        self.gain, self.p, self.warm_cool = gain, p, warm_cool

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        apply = float(torch.rand(())) < self.p
        if not apply:
            return {"gains": None}
        gains = 1.0 + (2 * torch.rand(3) - 1) * self.gain
        if self.warm_cool:  # drawn only when on: presets without it draw as before
            t = float((2 * torch.rand(()) - 1) * self.warm_cool)
            gains = gains * torch.tensor([1.0 + t, 1.0, 1.0 - t])
        return {"gains": gains}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["gains"] is None:
            return inpt
        return (inpt * params["gains"].to(inpt.dtype)[:, None, None]).clamp_(0.0, 1.0)


class RandomNoise(v2.Transform):
    """Gaussian sensor noise of a random strength (v2.GaussianNoise has a fixed sigma)."""

    def __init__(self, sigma: tuple[float, float], p: float) -> None:
        super().__init__()
        self.sigma, self.p = sigma, p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"sigma": _draw(self.p, *self.sigma)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["sigma"] is None:
            return inpt
        return F.gaussian_noise(inpt, sigma=params["sigma"], clip=True)


class RandomHue(v2.Transform):
    """A hue shift of up to +-``hue`` of the colour wheel (v2.ColorJitter's hue factor, same
    result to 1e-6) through OpenCV's float HSV conversion: 4x cheaper than torchvision's on
    one thread."""

    def __init__(self, hue: float, p: float) -> None:
        super().__init__()
        self.hue, self.p = hue, p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        shift = _draw(self.p, -self.hue, self.hue)
        return {"degrees": None if shift is None else shift * 360.0}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["degrees"] is None:
            return inpt
        return _chw(imageops.hue_shift(_hwc(inpt), params["degrees"]), inpt)


class RandomJpeg(v2.Transform):
    """JPEG compression at a random quality, through OpenCV's libjpeg (torchvision 0.29
    deprecates its own image encoding, which v2.JPEG uses). Float image in and out."""

    def __init__(self, quality: tuple[int, int], p: float) -> None:
        super().__init__()
        self.quality, self.p = quality, p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if float(torch.rand(())) >= self.p:
            return {"quality": None}
        return {"quality": int(torch.randint(self.quality[0], self.quality[1] + 1, ()))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["quality"] is None:
            return inpt
        hwc = (inpt.permute(1, 2, 0) * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8).numpy()
        out = imageops.jpeg_round_trip(hwc, params["quality"])
        return inpt.new_tensor(out).permute(2, 0, 1).div_(255.0)


__all__ = ["RandomBlur", "RandomChannelGain", "RandomHue", "RandomJpeg", "RandomNoise", "RandomPoseOnBackground"]
