"""Training losses: the labelled loss of the clean images and the consistency loss that asks the
model to predict the same for a field-perturbed view of each image (``train --consistency``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def js_consistency(*logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence between the predictions of two or more views of the same images
    (AugMix, Hendrycks et al. 2020): the mean KL of each view's distribution from their mixture,
    averaged over the batch. Bounded (at most log of the number of views), symmetric, and zero
    exactly when every view predicts the same, so a perturbation the model cannot yet read pulls
    its prediction towards the clean one instead of fitting a hard label it cannot reach."""
    probs = [F.softmax(x.float(), dim=1) for x in logits]
    mixture = torch.clamp(torch.stack(probs).mean(0), 1e-7, 1.0).log()
    return sum(F.kl_div(mixture, p, reduction="batchmean") for p in probs) / len(probs)


__all__ = ["js_consistency"]
