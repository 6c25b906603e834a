"""DeepChrome: a 1-D convolution over the bins with the marks as channels (Singh et al. 2016)."""

from __future__ import annotations

import torch
from torch import nn

from histcli.errors import ModelError
from histcli.models import Architecture, register
from histcli.models._layers import Dropout, dense_head


class DeepChromeNetwork(nn.Module):
    def __init__(self, n_bins: int, n_marks: int, filters: int, kernel: int, pool: int, dense: tuple[int, ...], dropout: float):
        super().__init__()
        pooled_bins = (n_bins - kernel + 1) // pool
        self.features = nn.Sequential(
            nn.Conv1d(n_marks, filters, kernel),
            nn.ReLU(),
            nn.MaxPool1d(pool),
            Dropout(dropout),
            nn.Flatten(),
        )
        # As in the original, the dense layers have no dropout of their own.
        self.head = dense_head(filters * pooled_bins, dense, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.transpose(1, 2))).squeeze(-1)  # marks become channels


@register
class Deepchrome(Architecture):
    name = "deepchrome"
    summary = "1-D convolution over bins with marks as channels, max-pooling, dense layers (Singh et al. 2016)"
    hyperparameters = {"filters": 50, "kernel": 10, "pool": 5, "dense": (625, 125), "dropout": 0.5}

    def make_module(self, n_bins: int, n_marks: int, hparams: dict) -> nn.Module:
        # The unpadded convolution leaves n_bins - kernel + 1 positions, and pooling needs at least one window of them.
        needed = hparams["kernel"] + hparams["pool"] - 1
        if n_bins < needed:
            raise ModelError(
                f"deepchrome needs at least {needed} bins (kernel {hparams['kernel']} + pool {hparams['pool']} - 1), "
                f"got {n_bins}; use more bins or a smaller kernel or pool"
            )
        return DeepChromeNetwork(n_bins, n_marks, **hparams)
