"""For the training tests: a run killed mid-way and resumed against the same run uninterrupted."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import pytest


class Killed(RuntimeError):
    """Raised by a step hook: the run dies there, as a killed process would."""


def weights_close(a_path, b_path) -> bool:
    from safetensors.torch import load_file

    a, b = load_file(str(a_path)), load_file(str(b_path))
    return max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def small_leaves(root: Path) -> Path:
    """3 synthetic cultivars, 45 training images: two steps an epoch at batch 16."""
    from clca_edge.data.synth import SynthConfig, write_synthetic_dataset

    write_synthetic_dataset(root, SynthConfig(classes=3, per_class=20, size=64, seed=5))
    return root


def killed_resumed_and_whole(make_config, tmp_path: Path, kill_at: Tuple[int, int] = (1, 1), **kw):
    """Train ``a`` killed at (epoch, step) and resumed, and ``b`` uninterrupted, with the same
    settings (``make_config(out, resume=..., **kw)``); returns (a, b, b's result)."""
    from clca_edge.training.trainer import train

    def kill(epoch, step):
        if (epoch, step) == kill_at:
            raise Killed

    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(Killed):
        train(make_config(a, **kw), step_hook=kill)
    train(make_config(a, resume=True, **kw))
    return a, b, train(make_config(b, **kw))


def leafish(seed: int = 0, size: int = 64):
    """A green leaf on soil with a little sensor noise (uint8 RGB), for the transform tests."""
    import numpy as np

    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), (120, 90, 60), np.uint8)  # soil
    img[16:48, 20:44] = (40, 160, 50)  # leaf
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def seeded_draws(transform, rgb, torch_seed: int, other_seed: int, n: int) -> list:
    """``n`` calls of ``transform(rgb)`` after seeding torch with ``torch_seed`` and Python's and
    numpy's generators with ``other_seed``: a transform that draws from torch's generator alone
    gives the same list for any ``other_seed``."""
    import random

    import numpy as np
    import torch

    random.seed(other_seed)
    np.random.seed(other_seed)
    torch.manual_seed(torch_seed)
    return [transform(rgb) for _ in range(n)]
