"""Train and eval transforms. Both decode with ``core.preprocess.load_rgb`` (OpenCV); the eval
transform IS ``core.preprocess.preprocess``, so training, deploy and the device feed the model
identical tensors. The train transform is the paper's weak augmentation: resize the shorter side
as at evaluation, random crop, horizontal flip."""

from __future__ import annotations

import numpy as np
import torch

from ..core.preprocess import (PreprocessSpec, frame_leaf, normalize, preprocess, resize_center_crop,
                               resize_shorter)


class EvalTransform:
    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec

    def view(self, rgb: np.ndarray) -> np.ndarray:
        return resize_center_crop(rgb, self.spec)

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(preprocess(rgb, self.spec))


class TrainTransform:
    """Weak augmentation; randomness from torch's generator so seeds (and DataLoader workers,
    which torch seeds per worker) make it reproducible."""

    def __init__(self, spec: PreprocessSpec, hflip: float = 0.5) -> None:
        self.spec = spec
        self.hflip = hflip

    def view(self, rgb: np.ndarray) -> np.ndarray:
        """The random crop (and flip) of ``rgb``, uint8 HWC, before framing and normalisation:
        what a camera would have delivered for this training image."""
        spec = self.spec
        img = resize_shorter(rgb, spec)
        nh, nw = img.shape[:2]
        top = int(torch.randint(0, nh - spec.img_size + 1, ()).item())
        left = int(torch.randint(0, nw - spec.img_size + 1, ()).item())
        img = img[top:top + spec.img_size, left:left + spec.img_size]
        if self.hflip > 0 and torch.rand(()).item() < self.hflip:
            img = img[:, ::-1]
        return np.ascontiguousarray(img)

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(normalize(frame_leaf(self.view(rgb), self.spec), self.spec))
