"""Seed ensembles (`train --seeds`), the automatic training budget and the convergence flag."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, parse_tsv, run_cli

from histcli import models as architectures
from histcli.models._ensemble import Ensemble
from histcli.registry import Registry
from histcli.store import SPLIT_CODES, Store
from histcli.training import resolve_budget, settings_for


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two simulated cells of 600 genes (200 per split) x 20 bins."""
    path = tmp_path_factory.mktemp("ensemble") / "store.h5"
    result = run_cli("prepare", "simulate", "--cells", 2, "--genes", 600, "--bins", 20, "--seed", 8,
                     "--store", path, "-q")
    assert result.code == 0, result.stderr
    return path


def train(store, models, *args):
    return run_cli("train", "--store", store, "--models", models, "--device", "cpu", "--threads", 1, "-q",
                   "-f", "json", *args)


def member_probabilities(entry, inputs: np.ndarray) -> np.ndarray:
    """Each member's probabilities, from its own weights file loaded into a fresh module."""
    from safetensors.torch import load_file

    arch = architectures.get(entry.config["architecture"])
    result = []
    for member in entry.metadata["members"]:
        module = arch.build(entry.input.n_bins, len(entry.input.marks), entry.config["hyperparameters"])
        module.load_state_dict(load_file(entry.path / member["weights"]))
        with torch.no_grad():
            result.append(torch.sigmoid(module.eval()(torch.from_numpy(inputs))).double().numpy())
    return np.array(result)


def test_budget_follows_the_number_of_training_genes():
    crnn = settings_for("crnn")
    assert crnn.batch_size is None and crnn.patience is None and crnn.max_epochs == 1000
    # DeepChrome cells: the paper's batch of 200 (34 steps an epoch); 50 epochs are 1,700 steps.
    deepchrome_size = resolve_budget(crnn, 6601)
    assert (deepchrome_size.batch_size, deepchrome_size.patience) == (200, 50)
    # DeepDiff's Cell1, 200 genes: batches of 32, 7 steps an epoch, 50 epochs are 350 steps.
    assert (resolve_budget(crnn, 200).batch_size, resolve_budget(crnn, 200).patience) == (32, 50)
    # 2,000 genes: 100 per batch gives 20 steps an epoch.
    assert resolve_budget(crnn, 2000).batch_size == 100
    # 100 genes: batches of 32 are 4 steps an epoch, so 300 steps take 75 epochs of patience.
    assert (resolve_budget(crnn, 100).batch_size, resolve_budget(crnn, 100).patience) == (32, 75)
    # The user's choices are kept as given.
    chosen = settings_for("crnn", batch_size=64, patience=7)
    assert (resolve_budget(chosen, 200).batch_size, resolve_budget(chosen, 200).patience) == (64, 7)
    # A batch larger than the split, chosen or given, is the whole split (one step an epoch), as recorded.
    assert (resolve_budget(crnn, 20).batch_size, resolve_budget(crnn, 20).patience) == (20, 300)
    assert resolve_budget(settings_for("crnn", batch_size=5000), 200).batch_size == 200
    # The LSTM-only models clip gradients; the CRNN, convolutional models and the baseline do not.
    assert settings_for("rnn").clip_norm == settings_for("attentivechrome").clip_norm == 1.0
    assert settings_for("crnn").clip_norm == settings_for("cnn").clip_norm == settings_for("logistic").clip_norm == 0.0


def test_config_records_the_resolved_budget(store, tmp_path):
    models = tmp_path / "models"
    result = train(store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 3)
    assert result.code == 0, result.stderr
    training = Registry(models).get("logistic", "sim01").config["training"]
    assert training["batch_size"] == 32 and training["patience"] == 50  # 200 training genes
    assert training["lr_schedule"] == "constant" and training["clip_norm"] == 0.0


def test_a_run_cut_by_epochs_is_flagged_not_converged(store, tmp_path):
    models = tmp_path / "models"
    result = train(store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 3)
    assert result.code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["converged"] is False
    assert "logistic sim01 did not converge" in result.stderr and "raise --epochs" in result.stderr
    assert "the cap of 3 epochs" in result.stderr
    one = train(store, tmp_path / "one", "--cell", "sim01", "--arch", "logistic", "--epochs", 1)
    assert "the cap of 1 epoch with" in one.stderr
    entry = Registry(models).get("logistic", "sim01")
    assert entry.metadata["converged"] is False and entry.metadata["epochs_run"] == 3
    listed = run_cli("models", "list", "--models", models, "-f", "json")
    assert json.loads(listed.stdout)[0]["converged"] is False


def test_a_run_stopped_by_patience_is_flagged_converged(store, tmp_path):
    models = tmp_path / "models"
    # A large learning rate plateaus within a few epochs, so patience ends the run long before the cap.
    result = train(store, models, "--cell", "sim01", "--arch", "logistic", "--lr", "0.05", "--patience", 4)
    assert result.code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["converged"] is True and "did not converge" not in result.stderr
    metadata = Registry(models).get("logistic", "sim01").metadata
    assert metadata["converged"] is True
    assert metadata["epochs_run"] == metadata["best_epoch"] + 4 < 1000
    listed = run_cli("models", "list", "--models", models, "-f", "json")
    assert json.loads(listed.stdout)[0]["converged"] is True


def test_plateau_schedule_halves_the_learning_rate(store, tmp_path):
    models = tmp_path / "models"
    result = train(store, models, "--cell", "sim01", "--arch", "logistic", "--lr", "0.05", "--patience", 12,
                   "--lr-schedule", "plateau")
    assert result.code == 0, result.stderr
    history = Registry(models).get("logistic", "sim01").metadata["history"]
    rates = [h["lr"] for h in history]
    assert rates[0] == 0.05
    # Every change is a halving, and only after 12 // 4 = 3 epochs without a better validation AUC.
    best = -1.0
    since_best = 0
    # Each epoch's rate with the next one's: the last epoch has no next, so the triples stop one short.
    for before, after, epoch in zip(rates, rates[1:], history, strict=False):
        since_best = 0 if epoch["valid_auc"] > best else since_best + 1
        best = max(best, epoch["valid_auc"])
        if after != before:
            assert after == pytest.approx(before / 2)
            assert since_best > 3
    assert min(rates) < 0.05 and min(rates) >= 0.05 / 16


def test_ensemble_predicts_the_mean_of_its_members(store, tmp_path):
    models = tmp_path / "models"
    # Not refit, so that the members' weights also reproduce the validation AUC the entry records.
    result = train(store, models, "--cell", "sim01", "--arch", "cnn", "--seeds", "0-2", "--epochs", 4, "--no-refit")
    assert result.code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["seeds"] == [0, 1, 2]
    entry = Registry(models).get("cnn", "sim01")
    assert [m["seed"] for m in entry.metadata["members"]] == [0, 1, 2]
    assert sorted(p.name for p in entry.path.glob("*.safetensors")) == [
        "weights-seed0.safetensors", "weights-seed1.safetensors", "weights-seed2.safetensors"]
    for member in entry.metadata["members"]:
        assert {"best_epoch", "best_valid_auc", "epochs_run", "converged", "history"} <= set(member)
    cell = Store(store).load("sim01")
    test = cell.split == SPLIT_CODES["test"]
    inputs = np.log1p(cell.counts[test].astype(np.float32))
    members = member_probabilities(entry, inputs)
    assert not np.allclose(members[0], members[1], atol=1e-3), "members trained with different seeds differ"
    predicted = run_cli("predict", "cnn", "--cell", "sim01", "--from-store", "sim01", "--split", "test",
                        "--store", store, "--models", models, "-f", "tsv")
    assert predicted.code == 0, predicted.stderr
    rows = parse_tsv(predicted.stdout)
    assert [r["gene_id"] for r in rows] == list(cell.gene_ids[test])
    probabilities = np.array([float(r["probability"]) for r in rows])
    np.testing.assert_allclose(probabilities, members.mean(0), rtol=1e-5, atol=1e-7)
    # evaluate scores the same mean, and the entry's validation AUC is the ensemble's.
    from histcli.metrics import roc_auc

    evaluated = run_cli("evaluate", "cnn", "--store", store, "--models", models, "-f", "json", "-q")
    auc = json.loads(evaluated.stdout)["rows"][0]["auc"]
    assert auc == pytest.approx(roc_auc(cell.labels[test], members.mean(0)), abs=1e-9)
    valid = cell.split == SPLIT_CODES["valid"]
    valid_members = member_probabilities(entry, np.log1p(cell.counts[valid].astype(np.float32)))
    assert entry.metadata["best_valid_auc"] == pytest.approx(
        roc_auc(cell.labels[valid], valid_members.mean(0)), abs=1e-6)


def test_ensemble_members_are_the_single_runs_of_their_seeds(store, tmp_path):
    """Deterministic for a seed list, and member S is bit for bit `train --seed S`."""
    runs = []
    for folder in ("a", "b"):
        result = train(store, tmp_path / folder, "--cell", "sim02", "--arch", "crnn", "--seeds", "3,5",
                       "--epochs", 2)
        assert result.code == 0, result.stderr
        runs.append(Registry(tmp_path / folder).get("crnn", "sim02"))
    single = train(store, tmp_path / "single", "--cell", "sim02", "--arch", "crnn", "--seed", 5, "--epochs", 2)
    assert single.code == 0, single.stderr
    single_state = Registry(tmp_path / "single").get("crnn", "sim02").load_state()
    first, second = runs
    # Identical weights give identical files, so the entry's hash repeats too.
    assert first.metadata["weights_sha256"] == second.metadata["weights_sha256"]
    for path_a, path_b in zip(first.weight_files(), second.weight_files(), strict=True):
        assert path_a.read_bytes() == path_b.read_bytes()
    member = first.load_state(path=first.path / "weights-seed5.safetensors")
    assert all(torch.equal(member[key], single_state[key]) for key in single_state)
    assert first.config["training"]["seeds"] == [3, 5] and "seed" not in first.config["training"]


def test_ensemble_module_is_the_logit_of_the_mean_probability():
    """Exact where float32 probabilities would round to 1 (logits of 40)."""
    class Constant(torch.nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def forward(self, x):
            return torch.full((len(x),), self.value, dtype=x.dtype)

    x = torch.zeros(3, 4, 5)
    for values in ((0.0, 2.0, -1.0), (40.0, 38.0, 42.0), (-3.0,)):
        if all(v > 30 for v in values):  # 1 - mean rounds to 0 in float64 too: logit ~ -log(mean of e^-v)
            expected = -np.log(np.mean([np.exp(-v) for v in values]))
        else:
            mean = np.mean([1 / (1 + np.exp(-v)) for v in values])
            expected = np.log(mean) - np.log1p(-mean)
        output = Ensemble([Constant(v) for v in values])(x)
        np.testing.assert_allclose(output.numpy(), expected, rtol=1e-6)


def test_seed_and_seeds_are_exclusive(store, tmp_path):
    result = train(store, tmp_path / "m", "--cell", "sim01", "--arch", "logistic", "--seed", 1, "--seeds", "0-2")
    assert_one_line_error(result, "--seed and --seeds cannot be combined", code=2)
    for bad in ("2-0", "a-b", "1,1"):
        result = train(store, tmp_path / "m", "--cell", "sim01", "--arch", "logistic", "--seeds", bad)
        assert_one_line_error(result, f"--seeds {bad!r}", code=2)
    assert not (tmp_path / "m").exists() or not Registry(tmp_path / "m").names()


def test_a_failing_member_fails_the_whole_ensemble(store, tmp_path):
    """Member seed 1 diverges: nothing is written, not even member 0."""
    models = tmp_path / "models"
    script = (
        "import runpy, sys, torch\n"
        "from histcli.models import logistic\n"
        "original = logistic.LogisticRegression.forward\n"
        "def forward(self, x):\n"
        "    out = original(self, x)\n"
        "    return out * float('inf') if torch.initial_seed() == 1 else out\n"
        "logistic.LogisticRegression.forward = forward\n"
        f"sys.argv = ['histcli', 'train', '--cell', 'sim01', '--arch', 'logistic', '--seeds', '0-2', '--epochs', '3', "
        f"'--store', {str(store)!r}, '--models', {str(models)!r}]\n"
        "runpy.run_module('histcli', run_name='__main__')\n"
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert process.returncode == 1, process.stderr
    assert "training diverged at epoch 1" in process.stderr and "Traceback" not in process.stderr
    assert not Registry(models).exists("logistic", "sim01")
    assert not models.exists() or not list(models.rglob("*.safetensors"))


def test_ctrl_c_in_a_later_member_saves_the_members_so_far_marked_interrupted(store, tmp_path):
    """Ctrl-C in member seed 1's first batch: seed 0 is kept, the entry is marked interrupted, exit 130."""
    models = tmp_path / "models"
    script = (
        "import runpy, sys, torch\n"
        "original = torch.nn.BCEWithLogitsLoss.forward\n"
        "def loss(self, *args, **kwargs):\n"
        "    if torch.initial_seed() == 1:\n"
        "        raise KeyboardInterrupt\n"
        "    return original(self, *args, **kwargs)\n"
        "torch.nn.BCEWithLogitsLoss.forward = loss\n"
        f"sys.argv = ['histcli', 'train', '--cell', 'sim01', '--arch', 'logistic', '--seeds', '0-2', '--epochs', '3', "
        f"'--store', {str(store)!r}, '--models', {str(models)!r}, '-f', 'json']\n"
        "runpy.run_module('histcli', run_name='__main__')\n"
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert process.returncode == 130, process.stderr
    assert "Traceback" not in process.stderr
    entry = Registry(models).get("logistic", "sim01")
    assert entry.metadata["interrupted"] is True and entry.metadata["converged"] is False
    assert [m["seed"] for m in entry.metadata["members"]] == [0]
    assert entry.config["training"]["seeds"] == [0]
    row = json.loads(process.stdout)[0]
    assert row["interrupted"] is True and row["seeds"] == [0]  # the seeds the entry holds, not the ones asked for
    assert "saved seed(s) 0 of 0-2 marked as interrupted" in process.stderr
