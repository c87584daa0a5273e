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


def clean_target_kl(clean: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
    """KL divergence of each perturbed view's prediction from the clean view's, the clean one
    detached: the clean prediction is the target (a teacher's soft label, here the model's own on
    the clean crop) and is never pulled towards what the model makes of a corrupted image."""
    target = F.softmax(clean.detach().float(), dim=1)
    return sum(F.kl_div(F.log_softmax(x.float(), dim=1), target, reduction="batchmean") for x in others) / len(others)


# by the names of training.config.CONSISTENCY_LOSSES
CONSISTENCY_LOSSES = {"js": js_consistency, "clean_target": clean_target_kl}

__all__ = ["CONSISTENCY_LOSSES", "clean_target_kl", "js_consistency"]
