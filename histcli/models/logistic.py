"""Logistic regression on the flattened (log1p) counts: the baseline every deep model must beat."""

from __future__ import annotations

import torch
from torch import nn

from histcli.models import Architecture, register


class LogisticRegression(nn.Module):
    def __init__(self, n_bins: int, n_marks: int):
        super().__init__()
        self.linear = nn.Linear(n_bins * n_marks, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)).squeeze(-1)


@register
class Logistic(Architecture):
    name = "logistic"
    summary = "logistic regression on the flattened counts; the baseline to beat"
    hyperparameters = {}
    # A convex model: a larger step converges in few epochs, and a little L2
    # keeps the 500 weights of correlated neighbouring bins in check.
    training = {**Architecture.training, "lr": 1e-2, "weight_decay": 1e-4}

    def make_module(self, n_bins: int, n_marks: int, hparams: dict) -> nn.Module:
        return LogisticRegression(n_bins, n_marks)
