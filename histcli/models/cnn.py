"""CNN: the convolutional part of the CRNN, flattened into dense layers (Zhu et al. 2017)."""

from __future__ import annotations

import torch
from torch import nn

from histcli.models import Architecture, register
from histcli.models._layers import (
    check_image_kernel,
    convolutions,
    dense_head,
    keras_init,
)


class ConvolutionalNetwork(nn.Module):
    def __init__(
        self, n_bins: int, n_marks: int, maps: tuple[int, ...], kernel: tuple[int, int], dense: tuple[int, ...], dropout: float
    ):
        super().__init__()
        self.convolutions = convolutions(maps, kernel, dropout)
        channels = maps[-1] if maps else 1
        self.head = dense_head(channels * n_bins * n_marks, dense, dropout)
        keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature_maps = self.convolutions(x.unsqueeze(1))  # (batch, maps, bins, marks)
        return self.head(feature_maps.flatten(1)).squeeze(-1)


@register
class Cnn(Architecture):
    name = "cnn"
    summary = "the CRNN's convolutions followed by dense layers, no LSTM (Zhu et al. 2017)"
    hyperparameters = {"maps": (32, 32), "kernel": (3, 3), "dense": (100, 20), "dropout": 0.5}

    def check_hyperparameters(self, hparams: dict) -> None:
        check_image_kernel(self.name, hparams["kernel"])

    def make_module(self, n_bins: int, n_marks: int, hparams: dict) -> nn.Module:
        return ConvolutionalNetwork(n_bins, n_marks, **hparams)
