"""Refitting on train + valid once the epoch count is chosen (`train --refit`, the default)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_one_line_error, parse_tsv, run_cli

from histcli.registry import Registry
from histcli.store import SPLIT_CODES, CellData, Store

MARKS = ("H3K4me3", "H3K27me3")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A simulated cell of 300 genes (100 per split) x 10 bins."""
    path = tmp_path_factory.mktemp("refit") / "store.h5"
    result = run_cli("prepare", "simulate", "--cells", 1, "--genes", 300, "--bins", 10, "--seed", 4,
                     "--store", path, "-q")
    assert result.code == 0, result.stderr
    return path


def train(store, models, *args):
    return run_cli("train", "--store", store, "--models", models, "--device", "cpu", "--threads", 1, "-q",
                   "-f", "json", *args)


def only_validation_shows_the_second_mark(path) -> None:
    """A cell whose training genes vary in H3K4me3 alone (H3K27me3 is 0) and whose validation and test
    genes in H3K27me3 alone, each gene's label being whether its varying mark is high."""
    rng = np.random.default_rng(0)
    n = 120
    split = np.repeat([SPLIT_CODES["train"], SPLIT_CODES["valid"], SPLIT_CODES["test"]], n).astype(np.uint8)
    high = rng.integers(0, 2, 3 * n).astype(bool)
    counts = np.zeros((3 * n, 4, len(MARKS)), dtype=np.float32)
    training = split == SPLIT_CODES["train"]
    counts[training, :, 0] = np.where(high[training], 30.0, 1.0)[:, None]
    counts[~training, :, 0] = 5.0
    counts[~training, :, 1] = np.where(high[~training], 30.0, 1.0)[:, None]
    Store(path).write([CellData(
        name="lopsided", counts=counts, gene_ids=np.array([f"g{i}" for i in range(3 * n)], dtype=object),
        marks=MARKS, bin_size=100, window=200, tss_offset=200, split=split, labels=high.astype(np.int8))])


def test_refit_learns_what_only_the_validation_genes_show(tmp_path):
    """The logistic weights of H3K27me3 get no gradient from the training genes (their input is 0), so the
    chosen run keeps them as initialised; the refit, from the same seed's initial weights, raises them all
    (high H3K27me3 means label 1 in the validation genes)."""
    from safetensors.numpy import load_file

    store, models = tmp_path / "store.h5", tmp_path / "models"
    only_validation_shows_the_second_mark(store)
    for name, flag in (("refit", "--refit"), ("chosen", "--no-refit")):
        result = train(store, models, "--cell", "lopsided", "--arch", "logistic", "--name", name, "--epochs", 20,
                       "--patience", 5, flag)
        assert result.code == 0, result.stderr
    registry = Registry(models)
    weights = {name: load_file(registry.get(name, "lopsided").weights_path)["linear.weight"][0]
               for name in ("refit", "chosen")}
    assert (weights["refit"][1::2] > weights["chosen"][1::2]).all()
    refit = registry.get("refit", "lopsided").metadata
    chosen = registry.get("chosen", "lopsided").metadata
    assert refit["best_epoch"] == chosen["best_epoch"] == refit["refit_epochs"]
    assert refit["refit_genes"] == 240 and chosen["refit_genes"] is None


def test_refit_keeps_the_chosen_runs_selection_and_records_the_refit(store, tmp_path):
    models = tmp_path / "models"
    rows = {}
    for name, flag in (("refit", "--refit"), ("chosen", "--no-refit")):
        result = train(store, models, "--cell", "sim01", "--arch", "cnn", "--name", name, "--epochs", 12,
                       "--patience", 4, "--seed", 2, flag)
        assert result.code == 0, result.stderr
        rows[name] = json.loads(result.stdout)[0]
    registry = Registry(models)
    refit, chosen = registry.get("refit", "sim01"), registry.get("chosen", "sim01")
    # The validation AUC shown is the chosen run's, which the chosen weights reproduce on the valid genes.
    assert rows["refit"]["valid_auc"] == rows["chosen"]["valid_auc"] == chosen.metadata["best_valid_auc"]
    evaluated = run_cli("evaluate", "chosen", "--split", "valid", "--store", store, "--models", models,
                        "-f", "json", "-q")
    assert json.loads(evaluated.stdout)["rows"][0]["auc"] == pytest.approx(chosen.metadata["best_valid_auc"])
    for key in ("best_epoch", "epochs_run", "history", "converged"):
        assert refit.metadata[key] == chosen.metadata[key]
    assert refit.metadata["refit"] is True and chosen.metadata["refit"] is False
    assert refit.config["training"]["refit"] is True and chosen.config["training"]["refit"] is False
    assert refit.metadata["refit_epochs"] == chosen.metadata["best_epoch"]
    assert refit.metadata["refit_genes"] == 200
    assert refit.metadata["weights_sha256"] != chosen.metadata["weights_sha256"]
    listed = run_cli("models", "list", "--models", models, "-f", "tsv")
    assert {row["model"]: row["refit"] for row in parse_tsv(listed.stdout)} == {"refit": "true", "chosen": "false"}


def test_a_refit_model_is_not_scored_on_its_own_validation_genes(store, tmp_path):
    models = tmp_path / "models"
    assert train(store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 3).code == 0
    assert train(store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 3, "--no-refit",
                 "--name", "held-out").code == 0
    for command in (["evaluate", "logistic"], ["compare", "held-out", "logistic"]):
        result = run_cli(*command, "--split", "valid", "--store", store, "--models", models)
        assert_one_line_error(result, "model logistic was refit on the training and validation genes of sim01",
                              "--split test", "histcli models show logistic --cell sim01")
    assert run_cli("evaluate", "logistic", "--split", "test", "--store", store, "--models", models,
                   "-q").code == 0


def test_a_regressor_is_refit_on_targets_standardised_by_train_and_valid(store, tmp_path):
    models = tmp_path / "models"
    result = train(store, models, "--cell", "sim01", "--arch", "logistic", "--task", "regression", "--epochs", 3)
    assert result.code == 0, result.stderr
    cell = Store(store).load("sim01")
    both = cell.split_mask("train") | cell.split_mask("valid")
    levels = np.log1p(cell.expression[both])
    task = Registry(models).get("logistic", "sim01").config["task"]
    assert task["target_mean"] == pytest.approx(levels.mean())
    assert task["target_scale"] == pytest.approx(levels.std())


@pytest.mark.parametrize("mirror", ["off", "on"])  # a mirrored ensemble's validation outputs are run again
def test_every_ensemble_member_is_refit_and_the_ensemble_keeps_its_chosen_validation_auc(store, tmp_path, mirror):
    models = tmp_path / "models"
    for name, flag in (("refit", "--refit"), ("chosen", "--no-refit")):
        result = train(store, models, "--cell", "sim01", "--arch", "logistic", "--name", name, "--epochs", 6,
                       "--seeds", "0-1", "--mirror", mirror, flag)
        assert result.code == 0, result.stderr
    registry = Registry(models)
    refit, chosen = registry.get("refit", "sim01"), registry.get("chosen", "sim01")
    assert refit.metadata["best_valid_auc"] == chosen.metadata["best_valid_auc"]
    for member, plain in zip(refit.members, chosen.members, strict=True):
        assert member["refit_epochs"] == plain["best_epoch"] and member["refit_genes"] == 200
        assert plain["refit_epochs"] is None
    # The chosen ensemble's validation AUC is that of its predictions on the validation genes.
    evaluated = run_cli("evaluate", "chosen", "--split", "valid", "--store", store, "--models", models,
                        "-f", "json", "-q")
    assert json.loads(evaluated.stdout)["rows"][0]["auc"] == pytest.approx(chosen.metadata["best_valid_auc"])


def test_ctrl_c_during_the_refit_saves_the_chosen_run_marked_interrupted(store, tmp_path):
    """Ctrl-C arrives in the refit's first batch (raised from inside the loss, deterministically). The chosen
    run had stopped by patience, so the saved run is still marked converged."""
    models = tmp_path / "models"
    script = interrupting_script(store, models, "True", "--arch", "logistic", "--patience", "5")
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert process.returncode == 130, process.stderr
    assert "Traceback" not in process.stderr
    assert json.loads(process.stdout)[0]["interrupted"] is True
    interrupted = Registry(models).get("logistic", "sim01").metadata
    assert interrupted["interrupted"] is True and interrupted["refit"] is False
    result = train(store, models, "--cell", "sim01", "--arch", "logistic", "--patience", 5, "--name", "plain",
                   "--no-refit")
    assert result.code == 0, result.stderr
    # What was saved is the chosen run itself, which converged.
    plain = Registry(models).get("plain", "sim01").metadata
    assert interrupted["weights_sha256"] == plain["weights_sha256"]
    assert plain["converged"] is True and interrupted["converged"] is True
    assert interrupted["epochs_run"] - interrupted["best_epoch"] == 5


def interrupting_script(store, models, condition: str, *train_args: str) -> str:
    """Python that runs `histcli train` with Ctrl-C raised in the first batch of the refit whose ``_fit`` call
    satisfies ``condition`` (an expression in calls, the refits started so far, counting this one)."""
    return (
        "import runpy, sys, torch\n"
        "import histcli.training as training\n"
        "fit, calls = training._fit, [0]\n"
        "def interrupted(self, *args, **kwargs):\n"
        "    raise KeyboardInterrupt\n"
        "def fit_interrupting(*args, **kwargs):\n"
        "    if kwargs.get('learning_rates') is not None:\n"
        "        calls[0] += 1\n"
        f"        if {condition}:\n"
        "            torch.nn.MSELoss.forward = torch.nn.BCEWithLogitsLoss.forward = interrupted\n"
        "    return fit(*args, **kwargs)\n"
        "training._fit = fit_interrupting\n"
        f"sys.argv = ['histcli', 'train', '--cell', 'sim01', '--store', {str(store)!r}, '--models', {str(models)!r}, "
        f"'--threads', '1', '-f', 'json', *{list(train_args)!r}]\n"
        "runpy.run_module('histcli', run_name='__main__')\n"
    )


def test_ctrl_c_in_a_later_members_refit_keeps_only_the_refit_members(store, tmp_path):
    """A regression ensemble's members share one target scaling, the refit's (train + valid genes): the member
    whose refit was interrupted (trained on the training genes' scaling) is left out."""
    models = tmp_path / "models"
    script = interrupting_script(store, models, "calls[0] == 2", "--arch", "logistic", "--task", "regression",
                                 "--epochs", "4", "--seeds", "0-2")
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert process.returncode == 130, process.stderr
    assert "saved seed(s) 0 of 0-2 marked as interrupted (only members whose refit finished)" in process.stderr
    entry = Registry(models).get("logistic", "sim01")
    assert entry.seeds == [0] and entry.metadata["refit"] is True and entry.metadata["interrupted"] is True
    cell = Store(store).load("sim01")
    levels = np.log1p(cell.expression[cell.split_mask("train") | cell.split_mask("valid")])
    assert entry.config["task"]["target_mean"] == pytest.approx(levels.mean())


def test_a_refit_that_diverges_says_so_and_saves_nothing(store, tmp_path):
    models = tmp_path / "models"
    script = interrupting_script(store, models, "True", "--arch", "logistic", "--epochs", "3").replace(
        "    raise KeyboardInterrupt\n", "    return torch.tensor(float('nan'), requires_grad=True)\n")
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert process.returncode == 1, process.stderr
    assert process.stderr.startswith("histcli: error: the refit on train + valid (--no-refit saves the chosen run) "
                                     "diverged at epoch 1 (loss nan)")
    assert "Traceback" not in process.stderr and len(process.stderr.strip().splitlines()) == 1
    assert not Registry(models).exists("logistic", "sim01")
