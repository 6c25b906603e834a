"""Tests of the model registry, the architectures and the variational LSTM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import histcli.models as models
from histcli.errors import ModelError
from histcli.models._layers import VariationalLSTM, dropout_mask

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURES = ["attentivechrome", "cnn", "crnn", "deepchrome", "logistic", "rnn"]


def _counts(n_genes: int, n_bins: int, n_marks: int, seed: int = 0) -> torch.Tensor:
    """log1p of Poisson read counts, as the trainer feeds the models."""
    generator = torch.Generator().manual_seed(seed)
    rates = torch.rand(n_genes, n_bins, n_marks, generator=generator) * 4
    return torch.log1p(torch.poisson(rates, generator=generator))


# ---------------------------------------------------------------- registry


def test_names_lists_the_six_architectures():
    assert models.names() == ARCHITECTURES


def test_registry_does_not_import_torch():
    code = (
        "import sys, histcli.models as m; "
        "names = m.names(); "
        "assert 'torch' not in sys.modules, 'torch was imported'; "
        "print(','.join(names))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ",".join(ARCHITECTURES)


def test_get_returns_the_registered_architecture():
    arch = models.get("crnn")
    assert isinstance(arch, models.Architecture)
    assert arch.name == "crnn"
    assert models.get("crnn") is arch


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_architecture_declares_its_defaults(name):
    arch = models.get(name)
    assert arch.summary and "\n" not in arch.summary
    assert set(arch.training) == {"lr", "batch_size", "weight_decay", "max_epochs", "patience", "clip_norm",
                                  "lr_schedule"}
    # Batch size and patience are chosen per cell (training.resolve_budget); the cap is 1,000 epochs.
    assert arch.training["batch_size"] is None and arch.training["patience"] is None
    assert arch.training["max_epochs"] == 1000
    assert arch.transform == "log1p"


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(ModelError) as error:
        models.get("transformer")
    assert "transformer" in str(error.value)
    for name in ARCHITECTURES:
        assert name in str(error.value)


def test_register_rejects_a_name_that_is_not_the_module_name():
    with pytest.raises(ModelError, match="must match"):

        @models.register
        class Misnamed(models.Architecture):
            name = "misnamed"


# ---------------------------------------------------------------- hyperparameters


def test_resolve_converts_command_line_strings_by_the_type_of_the_default():
    arch = models.get("crnn")
    resolved = models.resolve_hyperparameters(
        arch, {"dropout": "0.3", "units": "64", "dense": "100,20,5", "maps": "(16, 8)", "kernel": [5, 3]}
    )
    assert resolved["dropout"] == 0.3 and isinstance(resolved["dropout"], float)
    assert resolved["units"] == 64 and isinstance(resolved["units"], int)
    assert resolved["dense"] == (100, 20, 5)
    assert resolved["maps"] == (16, 8)
    assert resolved["kernel"] == (5, 3)
    assert resolved["recurrent_dropout"] == arch.hyperparameters["recurrent_dropout"]


def test_resolve_with_no_overrides_gives_a_copy_of_the_defaults():
    arch = models.get("deepchrome")
    resolved = models.resolve_hyperparameters(arch, {})
    assert resolved == arch.hyperparameters
    resolved["filters"] = 1
    assert arch.hyperparameters["filters"] == 50


def test_resolve_accepts_numbers_for_numbers():
    resolved = models.resolve_hyperparameters(models.get("crnn"), {"dropout": 0, "units": 16.0, "dense": 7})
    assert resolved["dropout"] == 0.0 and isinstance(resolved["dropout"], float)
    assert resolved["units"] == 16
    assert resolved["dense"] == (7,)


def test_resolve_rejects_unknown_keys_and_names_the_valid_ones():
    with pytest.raises(ModelError) as error:
        models.resolve_hyperparameters(models.get("deepchrome"), {"filter": "10"})
    message = str(error.value)
    assert "filter" in message
    for key in ("filters", "kernel", "pool", "dense", "dropout"):
        assert key in message


def test_resolve_rejects_any_key_for_an_architecture_without_hyperparameters():
    with pytest.raises(ModelError, match="valid hyperparameters: none"):
        models.resolve_hyperparameters(models.get("logistic"), {"units": "3"})


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"units": "6.5"}, "integer"),
        ({"units": "many"}, "integer"),
        ({"units": "0"}, "positive"),
        ({"dense": "100,x"}, "integer"),
        ({"dense": "100,-2"}, "positive"),
        ({"dropout": "half"}, "number"),
        ({"dropout": "1.0"}, "below 1"),
        ({"recurrent_dropout": "-0.1"}, "at least 0"),
        ({"dropout": "nan"}, "finite"),
    ],
)
def test_resolve_rejects_bad_values(overrides, fragment):
    with pytest.raises(ModelError, match=fragment) as error:
        models.resolve_hyperparameters(models.get("crnn"), overrides)
    assert next(iter(overrides)) in str(error.value)


def test_build_rejects_an_unknown_hyperparameter():
    with pytest.raises(ModelError, match="unknown hyperparameter"):
        models.get("cnn").build(100, 5, {"units": 32})


def test_build_rejects_an_empty_shape():
    with pytest.raises(ModelError, match="bins"):
        models.get("rnn").build(0, 5, {})


def test_crnn_rejects_a_kernel_of_the_wrong_rank():
    with pytest.raises(ModelError, match="kernel"):
        models.get("crnn").build(100, 5, {"kernel": "3"})


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("n_bins, n_marks", [(100, 5), (20, 5), (200, 5), (100, 3)])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_architecture_returns_one_logit_per_gene(name, n_bins, n_marks):
    torch.manual_seed(0)
    model = models.get(name).build(n_bins, n_marks, {})
    x = _counts(3, n_bins, n_marks)
    for training in (True, False):
        model.train(training)
        logits = model(x)
        assert logits.shape == (3,)
        assert logits.dtype == torch.float32
        assert torch.isfinite(logits).all()


def test_architecture_handles_a_batch_of_one():
    model = models.get("crnn").build(20, 5, {}).eval()
    assert model(_counts(1, 20, 5)).shape == (1,)


@pytest.mark.parametrize("n_bins", [1, 13])
def test_deepchrome_needs_enough_bins_for_its_kernel_and_pool(n_bins):
    with pytest.raises(ModelError, match="at least 14 bins"):
        models.get("deepchrome").build(n_bins, 5, {})
    models.get("deepchrome").build(n_bins, 5, {"kernel": "1", "pool": "1"})


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_same_seed_builds_identical_parameters(name):
    arch = models.get(name)
    torch.manual_seed(7)
    first = arch.build(20, 5, {}).state_dict()
    torch.manual_seed(7)
    second = arch.build(20, 5, {}).state_dict()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = models.get(name).build(20, 5, {}).train()
    model(_counts(16, 20, 5)).sum().backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


def _parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_crnn_parameter_count_at_100_bins_5_marks():
    model = models.get("crnn").build(100, 5, {})
    # conv 1 -> 32, 3x3:            32 * (1 * 9) + 32           =    320
    # conv 32 -> 32, 3x3:           32 * (32 * 9) + 32          =  9,248
    # LSTM, 32 maps * 5 marks = 160 inputs, 32 units, 4 gates:
    #   4 * 32 * (160 + 32) + two biases of 4 * 32 (PyTorch)    = 24,832
    # dense 32 -> 100:              32 * 100 + 100              =  3,300
    # dense 100 -> 20:              100 * 20 + 20               =  2,020
    # output 20 -> 1:               20 + 1                      =     21
    #                                                     total = 39,741
    assert _parameter_count(model) == 39_741


def test_parameter_counts_of_the_other_architectures_at_100_bins_5_marks():
    counts = {name: _parameter_count(models.get(name).build(100, 5, {})) for name in ARCHITECTURES}
    # cnn: the two convs (9,568) + dense 32*100*5 = 16,000 -> 100 (1,600,100) + 2,020 + 21
    assert counts["cnn"] == 9_568 + 1_600_100 + 2_020 + 21
    # deepchrome: conv 5 -> 50, width 10 (2,550); 91 positions pooled by 5 -> 18;
    # dense 50 * 18 = 900 -> 625 (563,125), 625 -> 125 (78,250), 125 -> 1 (126)
    assert counts["deepchrome"] == 2_550 + 563_125 + 78_250 + 126
    # rnn: LSTM 5 -> 32 (4*32*(5+32) + 256 = 4,992) + dense 3,300 + 2,020 + 21
    assert counts["rnn"] == 4_992 + 3_300 + 2_020 + 21
    # attentivechrome, per mark: bidirectional LSTM 1 -> 32 (2 * (4*32*(1+32) + 256) = 8,960)
    # and a 64-long context vector; marks: bidirectional LSTM 64 -> 16
    # (2 * (4*16*(64+16) + 128) = 10,496), a 32-long context vector, output 32 -> 1
    assert counts["attentivechrome"] == 5 * (8_960 + 64) + 10_496 + 32 + 33
    assert counts["logistic"] == 100 * 5 + 1


# ---------------------------------------------------------------- crnn layout


def _lstm_inputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    captured = []
    handle = model.lstm.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return captured[0]


@pytest.mark.parametrize("bin_index", [0, 37, 99])
def test_crnn_lstm_step_sees_only_nearby_bins(bin_index):
    # Two 3x3 'same' convolutions give each bin a receptive field of bins t-2..t+2,
    # so with bins as the sequence axis a change at one bin reaches only the
    # LSTM steps within two bins of it. A reshape without the permute would put
    # bins of every region into each step, and changed steps would be spread out.
    torch.manual_seed(0)
    model = models.get("crnn").build(100, 5, {}).eval()
    x = _counts(2, 100, 5)
    perturbed = x.clone()
    perturbed[:, bin_index, :] += 3.0
    with torch.no_grad():
        before, after = _lstm_inputs(model, x), _lstm_inputs(model, perturbed)
    assert before.shape == (2, 100, 32 * 5)
    changed_steps = {int(step) for step in torch.nonzero((after - before).abs().amax(dim=(0, 2)) > 0)}
    assert changed_steps
    assert changed_steps <= set(range(bin_index - 2, bin_index + 3))


def test_crnn_lstm_step_holds_every_map_at_every_mark_of_its_bin():
    torch.manual_seed(0)
    model = models.get("crnn").build(20, 5, {}).eval()
    x = _counts(2, 20, 5)
    with torch.no_grad():
        feature_maps = model.convolutions(x.unsqueeze(1))  # (batch, maps, bins, marks)
        steps = _lstm_inputs(model, x)
    # Step t, feature map * 5 + mark, is the map's value at (bin t, mark).
    assert torch.equal(steps[:, 7, 3 * 5 + 2], feature_maps[:, 3, 7, 2])
    assert torch.equal(steps[:, 12].reshape(2, 32, 5), feature_maps[:, :, 12, :])


# ---------------------------------------------------------------- attentivechrome


def test_attentivechrome_attention_weights_are_distributions():
    torch.manual_seed(0)
    model = models.get("attentivechrome").build(30, 4, {}).eval()
    with torch.no_grad():
        logits, over_bins, over_marks = model.attend(_counts(3, 30, 4))
        assert torch.equal(logits, model(_counts(3, 30, 4)))
    assert over_bins.shape == (3, 4, 30)
    assert over_marks.shape == (3, 4)
    assert torch.allclose(over_bins.sum(-1), torch.ones(3, 4))
    assert torch.allclose(over_marks.sum(-1), torch.ones(3))


# ---------------------------------------------------------------- learning


def _learnable_problem(n_genes=256, n_bins=20, n_marks=5):
    """The label is whether mark 0 is high around the centre bins; as in real
    data, a gene's level of a mark is shared by its bins, up to Poisson noise."""
    generator = torch.Generator().manual_seed(3)
    rates = (torch.rand(n_genes, 1, n_marks, generator=generator) * 4).expand(n_genes, n_bins, n_marks)
    x = torch.log1p(torch.poisson(rates.contiguous(), generator=generator))
    centre = x[:, n_bins // 2 - 2 : n_bins // 2 + 2, 0].sum(1)
    return x, (centre > centre.median()).float()


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_architecture_fits_a_small_learnable_problem(name):
    arch = models.get(name)
    # Light dropout: the default 0.5 slows fitting too much for a quick test,
    # but the training-mode paths (masks, the unrolled LSTM) still run.
    hparams = {key: "0.1" for key in arch.hyperparameters if key.endswith("dropout")}
    torch.manual_seed(0)
    model = arch.build(20, 5, hparams)
    x, y = _learnable_problem()
    loss = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.eval()
    with torch.no_grad():
        initial = loss(model(x), y).item()
    model.train()
    for _ in range(30):
        optimizer.zero_grad()
        loss(model(x), y).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = loss(model(x), y).item()
    assert final < 0.7 * initial, (initial, final)


# ---------------------------------------------------------------- variational LSTM


def _plain_lstm_like(variational: VariationalLSTM) -> nn.LSTM:
    """An nn.LSTM with the same weights, dtype included."""
    plain = nn.LSTM(variational.lstm.input_size, variational.lstm.hidden_size, batch_first=True)
    plain.to(variational.lstm.weight_ih_l0.dtype).load_state_dict(variational.lstm.state_dict())
    return plain


def test_variational_lstm_masks_are_active_in_training():
    torch.manual_seed(0)
    lstm = VariationalLSTM(5, 8, 12, input_dropout=0.5, recurrent_dropout=0.5)
    x = torch.randn(4, 12, 5)
    lstm.train()
    first, first_last = lstm(x)
    second, _ = lstm(x)
    lstm.eval()
    evaluated, _ = lstm(x)
    assert first.shape == (4, 12, 8)
    assert torch.equal(first_last, first[:, -1])
    assert not torch.allclose(first, second)
    assert not torch.allclose(first, evaluated)


def test_variational_lstm_in_eval_mode_is_the_plain_lstm():
    torch.manual_seed(0)
    lstm = VariationalLSTM(5, 8, 12, input_dropout=0.5, recurrent_dropout=0.5).eval()
    x = torch.randn(4, 12, 5)
    output, last = lstm(x)
    again, _ = lstm(x)
    expected, (expected_last, _) = _plain_lstm_like(lstm)(x)
    assert torch.equal(output, again)
    assert torch.allclose(output, expected, atol=1e-6)
    assert torch.allclose(last, expected_last[0], atol=1e-6)


def test_unrolled_loop_without_dropout_is_the_plain_lstm():
    # The step-by-step loop used in training must compute nn.LSTM's function
    # exactly, gate order included.
    torch.manual_seed(0)
    lstm = VariationalLSTM(5, 8, 12, input_dropout=0.5, recurrent_dropout=0.5).train()
    with torch.no_grad():
        for parameter in lstm.parameters():  # biases too, which start at 0 for most gates
            parameter.normal_()
    x = torch.randn(4, 12, 5)
    expected, (expected_last, _) = _plain_lstm_like(lstm)(x)
    for masks in ((None, None), (torch.ones(4, 5), torch.ones(4, 8))):
        output, last = lstm.unrolled(x, *masks)
        assert torch.allclose(output, expected, atol=1e-5)
        assert torch.allclose(last, expected_last[0], atol=1e-5)


def test_variational_lstm_without_dropout_trains_as_the_plain_lstm():
    torch.manual_seed(0)
    lstm = VariationalLSTM(5, 8, 12).train()
    x = torch.randn(4, 12, 5)
    assert torch.allclose(lstm(x)[0], _plain_lstm_like(lstm)(x)[0], atol=1e-6)


def test_recurrent_mask_is_the_same_at_every_step():
    # Construction: every gate's recurrent weights are diagonal, so each hidden
    # unit only feeds back into itself. A unit whose recurrent mask entry is m
    # for the whole sequence then follows exactly the trajectory of a plain LSTM
    # with recurrent weights scaled by m (m is 0 or 2 at rate 0.5). A mask drawn
    # anew at each step would give trajectories that match neither.
    torch.manual_seed(0)
    hidden = 6
    # Double precision: feedback gains up to 3 amplify float32 rounding over 30 steps.
    lstm = VariationalLSTM(1, hidden, 30, input_dropout=0.0, recurrent_dropout=0.5).double().train()
    with torch.no_grad():
        lstm.lstm.weight_hh_l0.copy_(torch.eye(hidden).repeat(4, 1) * 1.5)
        # Open input gates (bias 0, forget bias 1), so that every unit's two trajectories differ visibly.
        lstm.lstm.bias_ih_l0.zero_()
        lstm.lstm.bias_ih_l0[hidden : 2 * hidden] = 1.0
    x = torch.randn(64, 30, 1, dtype=torch.float64)
    with torch.no_grad():
        output, _ = lstm(x)
        references = []
        for scale in (0.0, 2.0):
            plain = _plain_lstm_like(lstm)
            plain.weight_hh_l0.mul_(scale)
            references.append(plain(x)[0])
    dropped, kept = references
    assert (dropped[:, 1:] - kept[:, 1:]).abs().amax(dim=1).min() > 1e-3  # the two are told apart
    matches_dropped = torch.isclose(output, dropped, atol=1e-10).all(dim=1)  # (batch, hidden)
    matches_kept = torch.isclose(output, kept, atol=1e-10).all(dim=1)
    assert (matches_dropped | matches_kept).all()
    # Masks are drawn per sequence and per unit: both cases occur.
    assert matches_dropped.any() and matches_kept.any()


def test_input_mask_is_the_same_at_every_step():
    # With the recurrent mask off, a dropped input feature is zero at every step:
    # the output equals a plain LSTM on inputs with that feature zeroed and the
    # kept ones doubled.
    torch.manual_seed(0)
    lstm = VariationalLSTM(3, 4, 10, input_dropout=0.5, recurrent_dropout=0.0).train()
    x = torch.randn(32, 10, 3)
    masks = []
    draw = lstm.draw_masks

    def recording_draw(inputs):
        masks.append(draw(inputs))
        return masks[-1]

    lstm.draw_masks = recording_draw
    with torch.no_grad():
        output, _ = lstm(x)
        input_mask, recurrent_mask = masks[0]
        assert recurrent_mask is None
        assert set(input_mask.unique().tolist()) <= {0.0, 2.0}
        expected, _ = _plain_lstm_like(lstm)(x * input_mask.unsqueeze(1))
    assert torch.allclose(output, expected, atol=1e-5)


@pytest.mark.parametrize("memory", [2, 10, 100])
def test_gate_biases_start_with_memories_up_to_memory_steps(memory):
    """Chrono initialisation (Tallec & Ollivier 2018, eq. 16): forget bias log(u), input bias -log(u), u uniform
    on [1, memory - 1]. At zero input a unit with forget gate f forgets with time constant 1 / (1 - f) = 1 + u
    (sigmoid(log u) = u / (1 + u)): between 2 and ``memory`` steps, spread over the whole range."""
    torch.manual_seed(0)
    hidden = 256
    lstm = VariationalLSTM(5, hidden, memory)
    bias = (lstm.lstm.bias_ih_l0 + lstm.lstm.bias_hh_l0).detach().double()
    input_bias, forget_bias, cell_bias, output_bias = bias.chunk(4)
    assert torch.equal(input_bias, -forget_bias)
    assert not cell_bias.any() and not output_bias.any()
    time_constants = 1.0 / (1.0 - torch.sigmoid(forget_bias))
    assert time_constants.min() >= 2.0 - 1e-9 and time_constants.max() <= memory + 1e-9
    if memory > 2:  # uniform: a quarter of the units in each quarter of [2, memory], give or take
        quarters = torch.histc(time_constants, bins=4, min=2.0, max=float(memory))
        assert (quarters > hidden / 4 * 0.6).all(), quarters
    # The recurrent weights (four gates stacked) have orthonormal columns, the input weights are Glorot-uniform.
    recurrent = lstm.lstm.weight_hh_l0.detach().double()
    assert torch.allclose(recurrent.T @ recurrent, torch.eye(hidden, dtype=torch.float64), atol=1e-5)
    limit = (6.0 / (5 + 4 * hidden)) ** 0.5
    assert lstm.lstm.weight_ih_l0.abs().max() <= limit


@pytest.mark.parametrize("arch", ["crnn", "rnn"])
@pytest.mark.parametrize("n_bins", [20, 200])
def test_lstms_along_the_bins_start_with_memories_of_half_the_window(arch, n_bins):
    """The TSS sits mid-window, so the LSTM reading the bins starts with memories of up to n_bins / 2 steps."""
    torch.manual_seed(0)
    module = models.get(arch).build(n_bins, 5, {})
    forget_bias = (module.lstm.lstm.bias_ih_l0 + module.lstm.lstm.bias_hh_l0).detach().double().chunk(4)[1]
    time_constants = 1.0 / (1.0 - torch.sigmoid(forget_bias))
    assert time_constants.min() >= 2.0 - 1e-9 and time_constants.max() <= n_bins / 2 + 1e-9
    assert time_constants.max() > 0.8 * n_bins / 2  # 32 units: the longest lies near the top of the range


def test_variational_lstm_gradients_reach_all_weights():
    torch.manual_seed(0)
    lstm = VariationalLSTM(5, 8, 12, input_dropout=0.3, recurrent_dropout=0.3).train()
    x = torch.randn(6, 12, 5, requires_grad=True)
    output, last = lstm(x)
    (output.sum() + last.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, parameter in lstm.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_dropout_mask_keeps_the_expected_fraction_and_scales_it():
    torch.manual_seed(0)
    like = torch.empty(0, dtype=torch.float64)
    mask = dropout_mask((1000, 101), 0.3, like)
    assert mask.dtype == torch.float64 and mask.shape == (1000, 101)
    assert set(mask.unique().tolist()) == {0.0, 1 / 0.7}
    assert abs((mask > 0).double().mean().item() - 0.7) < 0.01
    assert dropout_mask((3, 3), 0.0, like) is None
    assert dropout_mask((3, 3), 1e-7, like) is None  # below the mask's resolution of 1/65536
    assert dropout_mask((3, 3), 1 - 1e-7, like).sum() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_architecture_runs_on_cuda(name):
    torch.manual_seed(0)
    model = models.get(name).build(20, 5, {}).cuda()
    x = _counts(4, 20, 5).cuda()
    for training in (True, False):
        model.train(training)
        logits = model(x)
        assert logits.device.type == "cuda" and logits.shape == (4,)
        if training:
            logits.sum().backward()
            assert all(p.grad is not None and p.grad.device.type == "cuda" for p in model.parameters())
