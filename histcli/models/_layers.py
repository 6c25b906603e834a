"""Layers shared by several architectures."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

from histcli.errors import HyperparameterError


class VariationalLSTM(nn.Module):
    """Single-layer LSTM with variational dropout (Gal & Ghahramani 2016).

    ``memory_steps`` is the longest memory the gate biases are initialised for
    (chrono initialisation, see :meth:`reset_parameters`).

    In training mode each sequence draws one dropout mask for its inputs and
    one for the hidden state fed back into the recurrence; both masks stay the
    same at every time step (Keras' ``dropout`` and ``recurrent_dropout``).
    In eval mode, or when both rates are 0, there is no dropout and the fused
    ``nn.LSTM`` holding the weights runs instead of the step-by-step loop.

    ``forward`` takes (batch, steps, input_size) and returns the hidden states
    of all steps, (batch, steps, hidden_size), and the last one, (batch, hidden_size).
    """

    def __init__(self, input_size: int, hidden_size: int, memory_steps: float, input_dropout: float = 0.0,
                 recurrent_dropout: float = 0.0):
        super().__init__()
        self.input_dropout = input_dropout
        self.recurrent_dropout = recurrent_dropout
        self.memory_steps = memory_steps
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Weights as in Keras, which the CRNN paper trained with: Glorot-uniform
        # input weights, orthogonal recurrent weights.
        nn.init.xavier_uniform_(self.lstm.weight_ih_l0)
        nn.init.orthogonal_(self.lstm.weight_hh_l0)
        # Gate biases by chrono initialisation (Tallec & Ollivier 2018), not Keras'
        # forget bias of 1: each unit's forget bias is log(u), u uniform on
        # [1, memory_steps - 1], its input bias -log(u), so at the start units keep
        # their state for 2 to ``memory_steps`` steps (time constant 1 + u). With a
        # forget bias of 1 every unit forgets within about 4 steps: on Cell1's 200
        # bins, read to 100 bins past the TSS, the CRNN's mean validation AUC over
        # seeds 0-2 was 0.8909 against 0.9051, the RNN's 0.8480 against 0.8994.
        hidden = self.lstm.hidden_size
        forget = torch.empty(hidden).uniform_(1.0, max(1.0, self.memory_steps - 1.0)).log_()
        with torch.no_grad():
            self.lstm.bias_ih_l0.zero_()
            self.lstm.bias_hh_l0.zero_()
            self.lstm.bias_ih_l0[:hidden] = -forget
            self.lstm.bias_ih_l0[hidden : 2 * hidden] = forget

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training or (self.input_dropout == 0 and self.recurrent_dropout == 0):
            output, (last, _) = self.lstm(x)
            return output, last[0]
        input_mask, recurrent_mask = self.draw_masks(x)
        return self.unrolled(x, input_mask, recurrent_mask)

    def draw_masks(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One (input, recurrent) pair of masks per sequence of ``x``; None where the rate is 0."""
        batch = x.shape[0]
        return (
            dropout_mask((batch, self.lstm.input_size), self.input_dropout, x),
            dropout_mask((batch, self.lstm.hidden_size), self.recurrent_dropout, x),
        )

    def unrolled(
        self, x: torch.Tensor, input_mask: torch.Tensor | None, recurrent_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the recurrence step by step with the given per-sequence masks (None: no mask)."""
        lstm = self.lstm
        if input_mask is not None:
            x = x * input_mask.unsqueeze(1)
        # The input mask does not change in time, so the input projection of
        # every step is one matrix product; the loop only adds the recurrent term.
        input_gates = functional.linear(x, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)
        recurrent_weight = lstm.weight_hh_l0.t()
        hidden = lstm.hidden_size
        h = x.new_zeros(x.shape[0], hidden)
        c = x.new_zeros(x.shape[0], hidden)
        outputs = []
        for step_gates in input_gates.unbind(1):
            fed_back = h if recurrent_mask is None else h * recurrent_mask
            gates = torch.addmm(step_gates, fed_back, recurrent_weight)
            input_gate, forget_gate, candidate, output_gate = gates.chunk(4, 1)  # nn.LSTM's gate order
            c = torch.addcmul(forget_gate.sigmoid() * c, input_gate.sigmoid(), candidate.tanh())
            h = output_gate.sigmoid() * c.tanh()
            outputs.append(h)
        return torch.stack(outputs, 1), h


def memory_steps(n_bins: int) -> float:
    """The memory an LSTM along the bins starts with: half the bins, the distance from the TSS, mid-window,
    to the last step. (Chrono over all 20 bins of E116 lowered the CRNN's validation AUC, 0.9217 against
    0.9287 for seed 0; over half of them it was 0.9276.)"""
    return n_bins / 2


def dropout_mask(shape: tuple[int, ...], rate: float, like: torch.Tensor) -> torch.Tensor | None:
    """An inverted-dropout mask of ``shape`` on the device and dtype of ``like``; None if ``rate`` is (about) 0.

    Kept entries are 1/(1 - rate), so eval mode needs no rescaling. On CPU,
    ``bernoulli_`` (behind ``nn.Dropout``) draws one random number per entry
    and dominated a CRNN training step; instead each 64-bit draw is split into
    four 16-bit integers compared with a threshold, about four times faster.
    The keep probability is thus rounded to a multiple of 1/65536.
    """
    threshold = round((1.0 - rate) * 65536) - 32768
    if threshold > 32767:  # the rate rounds to 0
        return None
    count = math.prod(shape)
    # random_() without bounds leaves the sign bit 0; from the int64 minimum all 64 bits are random.
    draws = torch.empty((count + 3) // 4, dtype=torch.int64, device=like.device).random_(-(2**63), None)
    uniform16 = draws.view(torch.int16)[:count].view(shape)  # uniform on [-32768, 32767]
    return (uniform16 < threshold).to(like.dtype).div_(1.0 - rate)


class Dropout(nn.Module):
    """``nn.Dropout`` with the faster mask of :func:`dropout_mask`."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = dropout_mask(x.shape, self.rate, x) if self.training else None
        return x if mask is None else x * mask

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def convolutions(maps: tuple[int, ...], kernel: tuple[int, ...], dropout: float) -> nn.Sequential:
    """2-D convolutions over a one-channel (bins x marks) image, shape-preserving ('same' padding), each with ReLU and dropout."""
    layers: list[nn.Module] = []
    channels = 1
    for out_channels in maps:
        layers += [nn.Conv2d(channels, out_channels, kernel, padding="same"), nn.ReLU()]
        if dropout > 0:
            layers.append(Dropout(dropout))
        channels = out_channels
    return nn.Sequential(*layers)


def dense_head(in_features: int, sizes: tuple[int, ...], dropout: float) -> nn.Sequential:
    """Dense ReLU layers of the given sizes, each followed by dropout, then one output unit (the logit)."""
    layers: list[nn.Module] = []
    for size in sizes:
        layers += [nn.Linear(in_features, size), nn.ReLU()]
        if dropout > 0:
            layers.append(Dropout(dropout))
        in_features = size
    layers.append(nn.Linear(in_features, 1))
    return nn.Sequential(*layers)


def keras_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every linear and convolution layer, as Keras initialises them."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def check_image_kernel(arch_name: str, kernel: tuple[int, ...]) -> None:
    """Raise HyperparameterError (a usage error) unless a 2-D convolution ``kernel`` gives two sizes, along bins
    and along marks."""
    if len(kernel) != 2:
        raise HyperparameterError(f"{arch_name}: kernel needs two sizes, along bins and along marks (e.g. 3,3); got {kernel}")
