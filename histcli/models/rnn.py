"""RNN: the CRNN's LSTM run directly on the bins, no convolutions (Zhu et al. 2017)."""

from __future__ import annotations

import torch
from torch import nn

from histcli.models import Architecture, register
from histcli.models._layers import VariationalLSTM, dense_head, keras_init, memory_steps


class RecurrentNetwork(nn.Module):
    def __init__(
        self, n_bins: int, n_marks: int, units: int, dense: tuple[int, ...], dropout: float, input_dropout: float,
        recurrent_dropout: float
    ):
        super().__init__()
        self.lstm = VariationalLSTM(n_marks, units, memory_steps(n_bins), input_dropout, recurrent_dropout)
        self.head = dense_head(units, dense, dropout)
        keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, last = self.lstm(x)  # each step holds the marks of one bin
        return self.head(last).squeeze(-1)


@register
class Rnn(Architecture):
    name = "rnn"
    summary = "an LSTM along the bins followed by dense layers, no convolutions (Zhu et al. 2017)"
    # Input dropout is off by default: with only n_marks inputs, a per-sequence
    # mask hides whole marks for a whole gene, and with 0.5 the validation loss
    # rose during training on a synthetic one-mark problem (0.0 fell steadily).
    hyperparameters = {"units": 32, "dense": (100, 20), "dropout": 0.5, "input_dropout": 0.0, "recurrent_dropout": 0.5}
    # Clipped gradients keep the LSTM's rare large steps from undoing what it has learnt.
    training = {**Architecture.training, "clip_norm": 1.0}
    revision = 2  # 2: chrono-initialised LSTM gate biases (VariationalLSTM)

    def make_module(self, n_bins: int, n_marks: int, hparams: dict) -> nn.Module:
        return RecurrentNetwork(n_bins, n_marks, **hparams)
