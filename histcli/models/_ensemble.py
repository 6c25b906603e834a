"""A seed ensemble: several trained modules of one architecture acting as one model."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


class Ensemble(nn.Module):
    """Several modules acting as one, combined as the task says (``combine``).

    ``probability`` (classification): the mean of the members' probabilities,
    returned as a logit, so callers treat the ensemble like any model (sigmoid
    of the output is the probability) and evaluation, comparison and
    prediction need no ensemble case. The logit of the mean probability is
    computed in log space, ``logsumexp(logsigmoid(z_i)) - logsumexp(logsigmoid(-z_i))``,
    which stays exact where a probability rounds to 0 or 1 in float32.
    ``mean`` (regression): the mean of the members' outputs.
    """

    def __init__(self, members: list[nn.Module], combine: str = "probability"):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if combine not in ("probability", "mean"):
            raise ValueError(f"unknown ensemble combination {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([member(x) for member in self.members]).double()
        if self.combine == "mean":
            return outputs.mean(0).to(x.dtype)
        return (torch.logsumexp(functional.logsigmoid(outputs), 0)
                - torch.logsumexp(functional.logsigmoid(-outputs), 0)).to(x.dtype)

