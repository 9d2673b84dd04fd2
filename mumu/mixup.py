"""mixup (Zhang et al., ICLR 2018) for multimodal batches, in training (`train.mixup` = alpha > 0).

Each training batch is blended with a shuffled copy of itself: every modality's inputs become
``weight * own + (1 - weight) * partner's`` with one weight ~ Beta(alpha, alpha) per batch, and the loss is
``weight * loss(own labels) + (1 - weight) * loss(partner's labels)``, activity and group losses alike (the
loss is linear in the labels, so this is the loss of the blended labels). Inputs are blended as the cache
stores them (visual features, sensor windows), before modality dropout and standardisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Mixup:
    weight: float  # the share of each sample's own inputs and labels in its blend
    partner: torch.Tensor  # (B,) the batch index each sample is blended with

    @classmethod
    def draw(cls, lengths: dict[str, torch.Tensor], alpha: float) -> "Mixup":
        """A weight ~ Beta(alpha, alpha) and a random pairing, from torch's generator (which the training step
        seeds, so a resumed run draws the same). A sample sharing no present modality with its drawn partner is
        paired with itself instead: a blend needs a stream both have."""
        weight = float(torch.distributions.Beta(alpha, alpha).sample())
        present = torch.stack([n > 0 for n in lengths.values()], dim=1)  # (B, M)
        size = present.shape[0]
        partner = torch.randperm(size, device=present.device)
        shared = (present & present[partner]).any(dim=1)  # (B,)
        return cls(weight, torch.where(shared, partner, torch.arange(size, device=present.device)))

    def inputs(self, x: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Each modality blended over the steps both samples have: one missing from either is missing from the
        blend. x: visual (B, S, F) or sensor (B, S, W, C); lengths (B,)."""
        blended = {name: self.weight * v + (1 - self.weight) * v[self.partner] for name, v in x.items()}
        return blended, {name: torch.minimum(n, n[self.partner]) for name, n in lengths.items()}

    def partner_labels(self, batch: dict) -> dict:
        """The batch with each sample's labels replaced by its partner's."""
        return dict(batch, label=batch["label"][self.partner], group=batch["group"][self.partner])
