"""AttentiveChrome: per-mark bin-level LSTMs with attention, then a mark-level LSTM with attention (Singh et al. 2017).

Follows the published PyTorch model (QData/AttentiveChrome, v2PyTorch): each
mark has its own bidirectional LSTM over its bins, summarised by soft
attention over the bins; a bidirectional LSTM over the mark summaries (half
as many units per direction) is summarised by soft attention over the marks,
and one dense unit gives the logit. Dropout on the bin-level LSTM outputs is
the one of the original Lua model.
"""

from __future__ import annotations

import torch
from torch import nn

from histcli.models import Architecture, register
from histcli.models._layers import Dropout


class SoftAttention(nn.Module):
    """Weights the steps of a sequence by softmax over steps of (state . context) and sums them."""

    def __init__(self, size: int):
        super().__init__()
        self.context = nn.Parameter(torch.empty(size).uniform_(-0.1, 0.1))

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, steps, size) -> summary (batch, size) and attention weights (batch, steps)."""
        weights = torch.softmax(states @ self.context, dim=1)
        return (weights.unsqueeze(1) @ states).squeeze(1), weights


class AttentiveChromeNetwork(nn.Module):
    def __init__(self, n_marks: int, bin_units: int, mark_units: int, dropout: float):
        super().__init__()
        self.bin_encoders = nn.ModuleList(
            nn.LSTM(1, bin_units, batch_first=True, bidirectional=True) for _ in range(n_marks)
        )
        self.bin_attentions = nn.ModuleList(SoftAttention(2 * bin_units) for _ in range(n_marks))
        self.dropout = Dropout(dropout)
        self.mark_encoder = nn.LSTM(2 * bin_units, mark_units, batch_first=True, bidirectional=True)
        self.mark_attention = SoftAttention(2 * mark_units)
        self.output = nn.Linear(2 * mark_units, 1)

    def attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (batch,), attention over bins (batch, marks, bins) and over marks (batch, marks)."""
        summaries, bin_weights = [], []
        for mark, (encoder, attention) in enumerate(zip(self.bin_encoders, self.bin_attentions, strict=True)):
            states, _ = encoder(x[:, :, mark : mark + 1])
            summary, weights = attention(self.dropout(states))
            summaries.append(summary)
            bin_weights.append(weights)
        mark_states, _ = self.mark_encoder(torch.stack(summaries, 1))
        gene, mark_weights = self.mark_attention(mark_states)
        return self.output(gene).squeeze(-1), torch.stack(bin_weights, 1), mark_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attend(x)[0]


@register
class Attentivechrome(Architecture):
    name = "attentivechrome"
    summary = "per-mark LSTMs with attention over bins, then an LSTM with attention over marks (Singh et al. 2017)"
    hyperparameters = {"bin_units": 32, "mark_units": 16, "dropout": 0.5}
    # Clipped gradients keep the LSTM's rare large steps from undoing what it has learnt.
    training = {**Architecture.training, "clip_norm": 1.0}

    def make_module(self, n_bins: int, n_marks: int, hparams: dict) -> nn.Module:
        return AttentiveChromeNetwork(n_marks, **hparams)
