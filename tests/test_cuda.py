"""The commands on a CUDA device: training there, and what it trains loaded on either device.

Skipped without a GPU (CI has none); run on one with `python3 -m pytest -q tests/test_cuda.py`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import parse_tsv, run_cli

from histcli.metrics import roc_auc
from histcli.registry import Registry
from histcli.store import SPLIT_CODES, Store

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

ARCHITECTURES = ["logistic", "deepchrome", "cnn", "rnn", "crnn", "attentivechrome"]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """One simulated cell of 600 genes (200 per split) x 20 bins, and where its models go."""
    folder = tmp_path_factory.mktemp("cuda")
    env = {"HISTCLI_STORE": str(folder / "store.h5"), "HISTCLI_MODELS": str(folder / "models")}
    result = run_cli("prepare", "simulate", "--cells", 1, "--genes", 600, "--bins", 20, "--seed", 5, "-q", env=env)
    assert result.code == 0, result.stderr
    return folder, env


def ok(env, *args):
    result = run_cli(*args, env=env)
    assert result.code == 0, result.stderr
    return result


def probabilities(env, name, device, split="test"):
    rows = parse_tsv(ok(env, "predict", name, "--cell", "sim01", "--from-store", "sim01", "--split", split,
                        "--device", device, "-f", "tsv", "-q").stdout)
    return [row["gene_id"] for row in rows], np.array([float(row["probability"]) for row in rows])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_auto_trains_on_cuda_and_the_model_predicts_the_same_on_either_device(space, arch):
    folder, env = space
    # Not refit: the saved weights are then the ones the recorded validation AUC was measured with.
    ok(env, "train", "--cell", "sim01", "--arch", arch, "--epochs", 3, "--seed", 0, "--no-refit", "-q")
    entry = Registry(folder / "models").get(arch, "sim01")
    assert entry.config["training"]["device"] == "cuda"
    on_gpu_genes, on_gpu = probabilities(env, arch, "cuda")
    on_cpu_genes, on_cpu = probabilities(env, arch, "cpu")
    assert on_gpu_genes == on_cpu_genes
    # Evaluation runs in float32 on both devices: only summation order differs.
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-4, atol=1e-5)
    # The validation AUC recorded by training on the GPU is the AUC of the saved weights.
    cell = Store(folder / "store.h5").load("sim01")
    valid_genes, valid = probabilities(env, arch, "cpu", split="valid")
    labels = cell.labels[cell.split == SPLIT_CODES["valid"]]
    assert valid_genes == list(cell.gene_ids[cell.split == SPLIT_CODES["valid"]])
    assert entry.metadata["best_valid_auc"] == pytest.approx(roc_auc(labels, valid), abs=2e-3)
    for device in ("cpu", "cuda"):
        evaluated = json.loads(ok(env, "evaluate", arch, "--device", device, "-f", "json", "-q").stdout)
        test_labels = cell.labels[cell.split == SPLIT_CODES["test"]]
        assert evaluated["rows"][0]["auc"] == pytest.approx(roc_auc(test_labels, on_cpu), abs=2e-3)


def test_a_cuda_training_step_is_the_cpu_computation(space):
    """The logistic model has no dropout: in float32 and from one seed, both devices run the same
    steps on the same batches, so their weights agree up to rounding (the chosen run's, then the refit's)."""
    folder, env = space
    weights = {}
    for device in ("cpu", "cuda"):
        name = f"logistic-{device}"
        ok(env, "train", "--cell", "sim01", "--arch", "logistic", "--name", name, "--device", device,
           "--precision", "fp32", "--epochs", 5, "--seed", 3, "-q")
        entry = Registry(folder / "models").get(name, "sim01")
        weights[device] = entry.build_module("cpu").state_dict()
    assert weights["cpu"].keys() == weights["cuda"].keys()
    for key, value in weights["cpu"].items():
        assert not torch.equal(value, torch.zeros_like(value))
        torch.testing.assert_close(weights["cuda"][key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["crnn", "attentivechrome"])
def test_bf16_autocast_on_cuda_learns_like_fp32(space, arch):
    folder, env = space
    scores = {}
    for precision in ("fp32", "bf16"):
        name = f"{arch}-{precision}"
        ok(env, "train", "--cell", "sim01", "--arch", arch, "--name", name, "--precision", precision,
           "--epochs", 30, "--seed", 1, "-q")
        entry = Registry(folder / "models").get(name, "sim01")
        assert entry.config["training"]["precision"] == precision
        scores[precision] = entry.metadata["best_valid_auc"]
    assert scores["fp32"] > 0.7, scores  # the comparison means something: the model learnt
    # Two runs on 200 validation genes (GPU kernels are not deterministic): a standard error of about 0.03.
    assert abs(scores["bf16"] - scores["fp32"]) < 0.05, scores


def test_ensemble_regression_on_cuda_loads_on_the_cpu(space):
    folder, env = space
    ok(env, "train", "--cell", "sim01", "--arch", "cnn", "--name", "levels", "--task", "regression",
       "--seeds", "0-1", "--epochs", 5, "-q")
    entry = Registry(folder / "models").get("levels", "sim01")
    assert entry.config["training"]["device"] == "cuda" and len(entry.metadata["members"]) == 2
    levels = {}
    for device in ("cpu", "cuda"):
        rows = parse_tsv(ok(env, "predict", "levels", "--cell", "sim01", "--from-store", "sim01", "--split", "test",
                            "--device", device, "-f", "tsv", "-q").stdout)
        levels[device] = np.array([float(row["log_expression"]) for row in rows])
    np.testing.assert_allclose(levels["cuda"], levels["cpu"], rtol=1e-4, atol=1e-4)
    cell = Store(folder / "store.h5").load("sim01")
    measured = np.log1p(cell.expression[cell.split == SPLIT_CODES["test"]])
    assert np.corrcoef(levels["cuda"], measured)[0, 1] > 0.3


@pytest.mark.parametrize("arch", ["cnn", "rnn", "crnn", "attentivechrome"])
def test_explain_on_cuda_matches_the_cpu(space, arch):
    """Gradients of recurrent models in eval mode, which cuDNN refuses, and the same attributions as the CPU's."""
    pytest.importorskip("captum")
    folder, env = space
    name = f"explained-{arch}"
    ok(env, "train", "--cell", "sim01", "--arch", arch, "--name", name, "--epochs", 3, "-q")
    for method in ("integrated-gradients", "deeplift"):
        attributions = {}
        for device in ("cpu", "cuda"):
            rows = parse_tsv(ok(env, "explain", name, "--cell", "sim01", "--method", method, "--device", device,
                                "-f", "tsv", "-q").stdout)
            attributions[device] = np.array([float(row["attribution"]) for row in rows])
        scale = np.abs(attributions["cpu"]).max()
        assert scale > 0 and len(attributions["cpu"]) == 200 * 20 * 5
        np.testing.assert_allclose(attributions["cuda"], attributions["cpu"], atol=1e-3 * scale, err_msg=method)
