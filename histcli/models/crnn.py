"""CRNN: convolutions over the bins x marks image, then an LSTM along the bins (Zhu et al. 2017)."""

from __future__ import annotations

import torch
from torch import nn

from histcli.models import Architecture, register
from histcli.models._layers import (
    VariationalLSTM,
    check_image_kernel,
    convolutions,
    dense_head,
    keras_init,
    memory_steps,
)


class ConvolutionalRecurrentNetwork(nn.Module):
    def __init__(
        self,
        n_bins: int,
        n_marks: int,
        maps: tuple[int, ...],
        kernel: tuple[int, int],
        units: int,
        dense: tuple[int, ...],
        dropout: float,
        input_dropout: float,
        recurrent_dropout: float,
    ):
        super().__init__()
        self.convolutions = convolutions(maps, kernel, dropout)
        channels = maps[-1] if maps else 1
        self.lstm = VariationalLSTM(channels * n_marks, units, memory_steps(n_bins), input_dropout, recurrent_dropout)
        self.head = dense_head(units, dense, dropout)
        keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature_maps = self.convolutions(x.unsqueeze(1))  # (batch, maps, bins, marks)
        # Bins are the sequence: step t holds every map at every mark of bin t.
        # (The reference Keras code reshaped without this permute, which mixes bins into the features.)
        steps = feature_maps.permute(0, 2, 1, 3).flatten(2)  # (batch, bins, maps * marks)
        _, last = self.lstm(steps)
        return self.head(last).squeeze(-1)


@register
class Crnn(Architecture):
    name = "crnn"
    summary = "convolutions over bins x marks, then an LSTM along the bins (Zhu et al. 2017)"
    hyperparameters = {
        "maps": (32, 32),
        "kernel": (3, 3),
        "units": 32,
        "dense": (100, 20),
        "dropout": 0.5,
        "input_dropout": 0.5,
        "recurrent_dropout": 0.5,
    }
    # No gradient clipping, unlike rnn and attentivechrome: it lowered the CRNN's
    # validation AUC on Cell1 (0.8845 against 0.8994) and left E116's unchanged.
    training = {**Architecture.training, "clip_norm": 0.0}
    revision = 2  # 2: chrono-initialised LSTM gate biases (VariationalLSTM)

    def check_hyperparameters(self, hparams: dict) -> None:
        check_image_kernel(self.name, hparams["kernel"])

    def make_module(self, n_bins: int, n_marks: int, hparams: dict) -> nn.Module:
        return ConvolutionalRecurrentNetwork(n_bins, n_marks, **hparams)
