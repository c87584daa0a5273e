"""Image operations shared by training's augmentation (data.augment), the field suite
(robustness.suite) and the preprocessing contract (core.preprocess): one implementation of each,
so "JPEG quality 25", "blur of 1% of the side" or "grey world" mean the same pixels wherever they
are applied. numpy/OpenCV only (no torch): the device runs them too. OpenCV is imported on first
use.

Images are RGB (or BGR, where said) uint8 (H, W, 3) unless a function says it takes float [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Luma weights (ITU-R 601), torchvision's rgb_to_grayscale and OpenCV's RGB2GRAY.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def border_colour(img: np.ndarray) -> np.ndarray:
    """Per-channel median of the image's outermost pixels (float64, the image's channel order and
    scale): the background a leaf is photographed on."""
    edge = border(img)
    n = edge.shape[0]
    low, high = np.partition(edge, [(n - 1) // 2, n // 2], axis=0)[[(n - 1) // 2, n // 2]]
    return (low.astype(np.float64) + high) / 2  # np.median's value, without its overhead


def border(a: np.ndarray) -> np.ndarray:
    """The outermost pixels of an (H, W[, C]) array, each once."""
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def channel_gain(rgb: np.ndarray, gains: Sequence[float]) -> np.ndarray:
    """Each channel times its gain (exposure: three equal gains; white balance: unequal), rounded
    and clipped at 255 as a camera clips, as one table look-up."""
    import cv2

    ramp = np.arange(256, dtype=np.float32)
    table = np.stack([np.clip(np.rint(ramp * g), 0, 255) for g in gains], axis=1).astype(np.uint8)
    return cv2.LUT(rgb, table[None])


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def contrast(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the mean grey of the image (torchvision's adjust_contrast)."""
    x = rgb.astype(np.float32)
    mean = float((x @ LUMA).mean())
    return to_u8(mean + factor * (x - mean))


def saturation(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the image's own greyscale (torchvision's adjust_saturation)."""
    x = rgb.astype(np.float32)
    grey = (x @ LUMA)[..., None]
    return to_u8(grey + factor * (x - grey))


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """RGB uint8 -> JPEG at ``quality`` (OpenCV, 4:2:0 as cameras write) -> RGB uint8."""
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        return rgb
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels (at least 0.1), reflected at the border; any dtype."""
    import cv2

    s = max(float(sigma), 0.1)
    return cv2.GaussianBlur(img, (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT)


def gaussian_noise(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian sensor noise of ``sigma`` grey levels, rounded and clipped."""
    return to_u8(rgb.astype(np.float32) + rng.normal(0.0, sigma, rgb.shape).astype(np.float32))


def warp_on_background(img: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """An affine (2x3) or perspective (3x3) warp, bilinear, with the uncovered area filled with
    the image's border colour (the background a leaf is photographed on; black would be a cue no
    camera makes). Any dtype; the fill is in the image's scale."""
    import cv2

    h, w = img.shape[:2]
    fill = tuple(float(v) for v in border_colour(img))
    if matrix.shape == (3, 3):
        return cv2.warpPerspective(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                   borderValue=fill)
    return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=fill)


def rotate_zoom_matrix(shape: Sequence[int], angle: float, scale: float) -> np.ndarray:
    """The 2x3 map rotating by ``angle`` degrees and scaling by ``scale`` about the centre."""
    import cv2

    h, w = shape[:2]
    return cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, scale)


def hue_shift(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """Hue of a float32 [0, 1] HWC RGB image rotated by ``degrees`` through OpenCV's float HSV
    conversion (torchvision's adjust_hue to 1e-6)."""
    import cv2

    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # float32: H in [0, 360)
    hsv[..., 0] = (hsv[..., 0] + degrees) % 360.0
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def channel_means(img: np.ndarray, bgr: bool = False, chw: bool = False) -> np.ndarray:
    """Per-channel means in RGB order on the 0-255 scale, of a uint8 HWC image (RGB, or BGR with
    ``bgr``) or a float [0, 1] CHW one (``chw``: training's augmented crop)."""
    if chw:
        return img.reshape(3, -1).mean(axis=1, dtype=np.float64) * 255.0
    import cv2

    means = np.asarray(cv2.mean(img)[:3], np.float64)
    return means[::-1] if bgr else means


def luma(img: np.ndarray, bgr: bool = False, chw: bool = False) -> np.ndarray:
    """ITU-R 601 luma on the 0-255 scale, flat, of a uint8 HWC image (RGB, or BGR with ``bgr``)
    or a float [0, 1] CHW one (``chw``)."""
    w = LUMA[::-1] if bgr else LUMA
    if chw:
        return np.tensordot(w * 255.0, img.reshape(3, -1), axes=1)
    return img.reshape(-1, 3) @ w


def quantiles(values: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """The ``qs`` quantiles of a flat array by order statistics (the lower of the two middle
    values, no interpolation: cheap, and exactly equivariant under any increasing map, such as
    an exposure gain or a contrast change, as long as the value itself is not clipped)."""
    ks = [min(values.size - 1, int(q * (values.size - 1))) for q in qs]
    return np.partition(values, ks)[ks].astype(np.float64)


def luma_median(img: np.ndarray, bgr: bool = False, chw: bool = False) -> float:
    """The median brightness (0-255 scale) of a uint8 HWC image or a float [0, 1] CHW one. A
    median, not a mean: under a gain with highlights clipped at full scale (an over-exposed
    photo), it is still scaled by exactly that gain as long as fewer than half of the pixels clip,
    which a mean is not (the clipped pixels pull it down)."""
    return float(quantiles(luma(img, bgr, chw), (0.5,))[0])


__all__ = ["LUMA", "border", "border_colour", "channel_gain", "channel_means", "contrast", "gaussian_blur",
           "gaussian_noise", "hue_shift", "jpeg_round_trip", "luma", "luma_median", "quantiles", "rotate_zoom_matrix", "saturation", "to_u8",
           "warp_on_background"]
