"""Train and eval transforms. Both decode with ``runtime.preprocess.load_rgb`` (OpenCV); the eval
transform IS ``runtime.preprocess.preprocess``, so training, deploy and the device feed the model
identical tensors. The train transform is the paper's weak augmentation: resize the shorter side
as at evaluation, random crop, horizontal flip."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..preprocess import PreprocessSpec
from ..runtime.preprocess import _INTERP, normalize, preprocess


class EvalTransform:
    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(preprocess(rgb, self.spec))


class TrainTransform:
    """Weak augmentation; randomness from torch's generator so seeds (and DataLoader workers,
    which torch seeds per worker) make it reproducible."""

    def __init__(self, spec: PreprocessSpec, hflip: float = 0.5) -> None:
        self.spec = spec
        self.hflip = hflip

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        spec = self.spec
        h, w = rgb.shape[:2]
        short = spec.resize_size
        scale = short / min(h, w)
        nh, nw = max(short, round(h * scale)), max(short, round(w * scale))
        interp = cv2.INTER_AREA if scale < 1 else _INTERP[spec.interpolation]
        img = cv2.resize(rgb, (nw, nh), interpolation=interp)
        top = int(torch.randint(0, nh - spec.img_size + 1, ()).item())
        left = int(torch.randint(0, nw - spec.img_size + 1, ()).item())
        img = img[top:top + spec.img_size, left:left + spec.img_size]
        if self.hflip > 0 and torch.rand(()).item() < self.hflip:
            img = img[:, ::-1]
        return torch.from_numpy(normalize(np.ascontiguousarray(img), spec))
