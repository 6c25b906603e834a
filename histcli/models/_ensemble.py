"""A seed ensemble: several trained modules of one architecture acting as one model."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


class Ensemble(nn.Module):
    """Predicts the mean of its members' probabilities, returned as a logit.

    Callers treat it like any model (sigmoid of the output is the probability),
    so evaluation, comparison and prediction need no ensemble case. The logit
    of the mean probability is computed in log space,
    ``logsumexp(logsigmoid(z_i)) - logsumexp(logsigmoid(-z_i))``, which stays
    exact where a probability rounds to 0 or 1 in float32.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([member(x) for member in self.members]).double()
        return (torch.logsumexp(functional.logsigmoid(logits), 0)
                - torch.logsumexp(functional.logsigmoid(-logits), 0)).to(x.dtype)

