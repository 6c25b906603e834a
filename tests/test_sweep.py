"""`histcli sweep` and `histcli tune` against a real local Ray instance (each command starts its own)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, file_digest, parse_tsv, run_cli

from histcli.distributed import entry_name, grid_points, parse_grid, plan_sweep
from histcli.errors import UsageError
from histcli.store import Store
from histcli.tuning import parse_search

README = (REPO / "README.md").read_text()


def _env(store: Path, models: Path) -> dict:
    return {"HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(models)}


def _readme_sweep_example() -> str:
    section = README.split("### `histcli sweep`", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def _same_entry(sweep_entry: Path, train_entry: Path) -> None:
    """Identical weights and config; metadata equal but for when, how long and the weights file's hash.

    The file's bytes (so its hash) can differ between processes: safetensors writes its header
    metadata from a hash map, in an order that varies from process to process.
    """
    from safetensors.numpy import load_file

    weights = [load_file(entry / "weights.safetensors") for entry in (sweep_entry, train_entry)]
    assert weights[0].keys() == weights[1].keys()
    assert all(np.array_equal(weights[0][key], weights[1][key]) for key in weights[0])
    configs = [json.loads((entry / "config.json").read_text()) for entry in (sweep_entry, train_entry)]
    assert configs[0] == configs[1]
    metadata = [json.loads((entry / "metadata.json").read_text()) for entry in (sweep_entry, train_entry)]
    for content in metadata:
        del content["created"], content["train_seconds"], content["refit_seconds"], content["weights_sha256"]
    assert metadata[0] == metadata[1]


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("sweep") / "store.h5"
    result = run_cli("prepare", "simulate", "--cells", 2, "--genes", 300, "--bins", 20, "--seed", 5, "-q",
                     "--store", store)
    assert result.code == 0, result.stderr
    return store


def test_sweep_equals_sequential_train_resumes_and_overwrites(cells, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'histcli[ray]')")
    models = tmp_path / "models"
    env = {**os.environ, **_env(cells, models), "EPOCHS": "3",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def sweep(*extra):
        command = _readme_sweep_example().replace("> sweep.tsv", " ".join(extra))
        process = subprocess.run(["bash", "-c", "set -euo pipefail\n" + command], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=600)
        assert process.returncode == 0, process.stderr[-3000:]
        return parse_tsv(process.stdout)

    rows = sweep()
    assert sorted((r["name"], r["cell"], r["arch"], r["seed"]) for r in rows) == sorted(
        (f"{arch}-s{seed}", cell, arch, str(seed))
        for cell in ("sim01", "sim02") for arch in ("crnn", "deepchrome") for seed in (0, 1))
    assert {r["status"] for r in rows} == {"trained"}
    for row in rows:
        entry = models / row["name"] / row["cell"]
        metadata = json.loads((entry / "metadata.json").read_text())
        assert float(row["valid_auc"]) == metadata["best_valid_auc"]
        assert int(row["best_epoch"]) == metadata["best_epoch"]
        # The same training, one `histcli train` at a time, with the sweep's one thread per trial.
        reference = tmp_path / "sequential"
        trained = run_cli("train", "--cell", row["cell"], "--arch", row["arch"], "--seed", row["seed"],
                          "--epochs", 3, "--threads", 1, "--device", "cpu", "--name", row["name"], "-q",
                          env=_env(cells, reference))
        assert trained.code == 0, trained.stderr
        _same_entry(entry, reference / row["name"] / row["cell"])

    digests = {r["name"] + r["cell"]: file_digest(models / r["name"] / r["cell"] / "metadata.json") for r in rows}
    again = sweep()
    assert {r["status"] for r in again} == {"skipped"} and len(again) == 8
    assert [float(r["valid_auc"]) for r in again] == [float(r["valid_auc"]) for r in rows]
    assert all(file_digest(models / r["name"] / r["cell"] / "metadata.json") == digests[r["name"] + r["cell"]]
               for r in again)

    marker = models / "crnn-s0" / "sim01" / "marker"
    marker.write_text("an entry replaced as a whole loses this file")
    retrained = sweep("--overwrite")
    assert {r["status"] for r in retrained} == {"trained"} and len(retrained) == 8
    assert not marker.exists()
    assert [float(r["valid_auc"]) for r in retrained] == [float(r["valid_auc"]) for r in rows]


def _trial_workers() -> list[int]:
    """Ray worker processes busy with a sweep trial (Ray titles them ray::<function> while they run one)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::run_trial"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_killed_worker_is_retried_and_a_failing_trial_leaves_the_others(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'histcli[ray]')")
    store, models = tmp_path / "store.h5", tmp_path / "models"
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 1500, "--bins", 20, "--seed", 2, "-q",
                   "--store", store).code == 0
    # A cell whose validation genes all have label 0: training it fails (AUC is undefined) on every attempt.
    good = Store(store).load("sim01")
    labels = good.labels.copy()
    labels[good.split_mask("valid")] = 0
    Store(store).write([dataclasses.replace(good, name="flat", labels=labels, fingerprint=None)])

    env = {**os.environ, **_env(store, models), "PYTHONUNBUFFERED": "1"}
    args = ["sweep", "--cell", "sim01", "--cell", "flat", "--arch", "crnn", "--seeds", "0-1", "--epochs", 12,
            "--patience", 100, "-f", "tsv"]
    process = subprocess.Popen([sys.executable, "-m", "histcli", *map(str, args)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and process.poll() is None and time.monotonic() < deadline:
        busy = _trial_workers()
        time.sleep(1.5)  # still busy after this long: a crnn trial of sim01 in the middle of its epochs
        for pid in set(busy) & set(_trial_workers()):
            os.kill(pid, 9)
            killed = pid
            break
    stdout, stderr = process.communicate(timeout=600)
    assert killed is not None, "no trial was caught running"
    assert process.returncode == 1, stderr

    assert stdout.startswith("name\t"), stderr
    rows = {(r["name"], r["cell"]): r for r in parse_tsv(stdout)}
    assert [rows["crnn-s0", "flat"]["status"], rows["crnn-s1", "flat"]["status"]] == ["failed", "failed"]
    assert "every valid gene has label 0" in rows["crnn-s0", "flat"]["error"]
    assert not (models / "crnn-s0" / "flat").exists()
    # Both trials of the good cell finished despite the kill, exactly as sequential runs would have.
    for seed in (0, 1):
        assert rows[f"crnn-s{seed}", "sim01"]["status"] == "trained"
        reference = tmp_path / "sequential"
        trained = run_cli("train", "--cell", "sim01", "--arch", "crnn", "--seed", seed, "--epochs", 12,
                          "--patience", 100, "--threads", 1, "--device", "cpu", "--name", f"crnn-s{seed}", "-q",
                          env=_env(store, reference))
        assert trained.code == 0, trained.stderr
        _same_entry(models / f"crnn-s{seed}" / "sim01", reference / f"crnn-s{seed}" / "sim01")
    assert "2 of 4 trials failed" in stderr and "Traceback" not in stderr


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Probability that a positive outscores a negative (ties count half), over every pair."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    greater = (positive[:, None] > negative[None, :]).sum()
    ties = (positive[:, None] == negative[None, :]).sum()
    return (greater + ties / 2) / (len(positive) * len(negative))


def test_tune_keeps_the_best_trial_with_the_search_record(cells, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'histcli[ray]')")
    import torch

    from histcli.evaluation import match_inputs
    from histcli.registry import Registry

    models = tmp_path / "models"
    # Not refit, so that the saved weights can be scored on the validation genes below.
    result = run_cli("tune", "--cell", "sim01", "--arch", "rnn", "--search", "lr=loguniform:1e-3:3e-2",
                     "--search", "units=choice:8,16", "--samples", 4, "--epochs", 6, "--seed", 1, "-f", "json",
                     "--no-refit", env=_env(cells, models))
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 4 and sum(r["best"] for r in rows) == 1
    entry = Registry(models).get("rnn-tuned", "sim01")
    search = entry.metadata["search"]
    assert search["space"] == {"lr": "loguniform:1e-3:3e-2", "units": "choice:8,16"}
    assert [t["valid_auc"] for t in search["trials"]] == [r["valid_auc"] for r in rows]
    for trial in search["trials"]:
        assert 1e-3 <= trial["params"]["lr"] <= 3e-2 and trial["params"]["units"] in (8, 16)
        assert 1 <= trial["epochs"] <= 6
    best = max(search["trials"], key=lambda t: t["valid_auc"])
    assert best["trial"] == search["best_trial"]
    assert entry.config["training"]["lr"] == best["params"]["lr"]
    assert entry.config["hyperparameters"]["units"] == best["params"]["units"]
    # The saved model is the best trial trained again: its validation AUC, computed here from its
    # predictions, is at least every trial's (equal when the best trial was not stopped early).
    cell = Store(cells).load("sim01", splits=["valid"])
    inputs = match_inputs(entry, cell)
    with torch.inference_mode():
        scores = entry.build_module()(torch.from_numpy(inputs)).numpy()
    auc = _auc(cell.labels, scores)
    assert auc == pytest.approx(entry.metadata["best_valid_auc"], abs=1e-9)
    assert auc >= max(t["valid_auc"] for t in search["trials"]) - 1e-9
    if best["status"] == "completed":
        assert entry.metadata["best_valid_auc"] == best["valid_auc"]


def test_tune_of_an_entry_another_run_is_training_fails_before_searching(cells, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'histcli[ray]')")
    from histcli.registry import Registry

    models = tmp_path / "models"
    with Registry(models).reserve([("rnn-tuned", "sim01")]):  # as a `histcli train --name rnn-tuned` would
        result = run_cli("tune", "--cell", "sim01", "--arch", "rnn", "--search", "lr=loguniform:1e-3:3e-2",
                         "--samples", 2, "--epochs", 2, env=_env(cells, models))
    assert_one_line_error(result, "'rnn-tuned' for cell 'sim01' is being trained", "choose another --name")
    assert "trial" not in result.stderr.lower()
    assert not Registry(models).names()


def test_sweep_trial_of_an_entry_another_run_is_training_fails_alone(cells, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'histcli[ray]')")
    from histcli.registry import Registry

    models = tmp_path / "models"
    with Registry(models).reserve([("logistic-s1", "sim01")]):  # as a `histcli train --name logistic-s1` would
        result = run_cli("sweep", "--cell", "sim01", "--arch", "logistic", "--seeds", "0-1", "--epochs", 2,
                         "-f", "tsv", env=_env(cells, models))
    assert result.code == 1, result.stderr
    rows = {row["name"]: row for row in parse_tsv(result.stdout)}
    assert rows["logistic-s0"]["status"] == "trained"
    assert rows["logistic-s1"]["status"] == "failed"
    assert "'logistic-s1' for cell 'sim01' is being trained" in rows["logistic-s1"]["error"]
    assert Registry(models).names() == ["logistic-s0"]
    assert "1 of 2 trials failed" in result.stderr and "Traceback" not in result.stderr


def test_sweep_and_tune_train_regression_models(cells, tmp_path):
    """--task regression goes through sweep and tune to the same entries train makes: selected on Pearson r."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'histcli[ray]')")
    import torch
    from scipy import stats

    from histcli.evaluation import match_inputs
    from histcli.registry import Registry

    models = tmp_path / "models"
    swept = run_cli("sweep", "--cell", "sim01", "--arch", "logistic", "--seeds", "0", "--task", "regression",
                    "--epochs", 3, "-f", "tsv", env=_env(cells, models))
    assert swept.code == 0, swept.stderr
    (row,) = parse_tsv(swept.stdout)
    entry = Registry(models).get(row["name"], "sim01")
    assert entry.task.name == "regression" and float(row["valid_pearson"]) == entry.metadata["best_valid_pearson"]

    tuned = run_cli("tune", "--cell", "sim01", "--arch", "logistic", "--task", "regression", "--search",
                    "lr=loguniform:1e-3:3e-2", "--samples", 2, "--epochs", 3, "-f", "json", "--no-refit",
                    env=_env(cells, models))
    assert tuned.code == 0, tuned.stderr
    rows = json.loads(tuned.stdout)
    entry = Registry(models).get("logistic-tuned", "sim01")
    search = entry.metadata["search"]
    assert search["objective"] == "validation Pearson r (best epoch)"
    assert [t["valid_pearson"] for t in search["trials"]] == [r["valid_pearson"] for r in rows]
    # The saved model's validation Pearson r, from its outputs and the stored expression.
    cell = Store(cells).load("sim01", splits=["valid"])
    with torch.inference_mode():
        outputs = entry.build_module()(torch.from_numpy(match_inputs(entry, cell))).numpy()
    r = stats.pearsonr(np.log1p(cell.expression), outputs)[0]
    assert r == pytest.approx(entry.metadata["best_valid_pearson"], abs=1e-5)


def test_without_ray_both_commands_say_how_to_install_it(cells, tmp_path):
    fake = tmp_path / "no-ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(fake.parent), str(REPO)])}
    sweep = run_cli("sweep", "--cell", "sim01", "--arch", "crnn", "--store", cells, env=env)
    assert_one_line_error(sweep, "histcli sweep", "pip install 'histcli[ray]'")
    tune = run_cli("tune", "--cell", "sim01", "--arch", "crnn", "--search", "lr=uniform:0.001:0.01",
                   "--store", cells, env=env)
    assert_one_line_error(tune, "histcli tune", "pip install 'histcli[ray]'")


def test_grid_axes_and_entry_names():
    grid = parse_grid(["units=32", "dense=100,20", "units=64", "dropout=0.3"])
    assert grid == {"units": ["32", "64"], "dense": ["100,20"], "dropout": ["0.3"]}
    assert grid_points({"a": ["1", "2"], "b": ["x", "y"]}) == [
        {"a": "1", "b": "x"}, {"a": "1", "b": "y"}, {"a": "2", "b": "x"}, {"a": "2", "b": "y"}]
    assert entry_name(None, "crnn", 3, False, {}) == "crnn"
    assert entry_name(None, "crnn", 3, True, {"units": "32", "dense": "100,20"}) == "crnn-s3-units32-dense100_20"
    assert entry_name("{arch}-u{units}-{seed}", "rnn", 1, True, {"units": "8"}) == "rnn-u8-1"
    with pytest.raises(UsageError, match="width"):
        entry_name("{arch}-{width}", "rnn", 1, True, {"units": "8"})

    def settings(arch, overrides, seed):
        return (arch, tuple(sorted(overrides.items())), seed)

    trials = plan_sweep(["c1", "c2"], ["rnn", "crnn"], [0, 1], ["units=8", "units=16", "dropout=0.2"], None, settings)
    assert len(trials) == 2 * 2 * 2 * 2
    assert trials[0].name == "rnn-s0-units8" and trials[0].settings == ("rnn", (("dropout", "0.2"), ("units", "8")), 0)
    assert trials[0].params_text == "units=8"
    with pytest.raises(UsageError, match="would both be saved"):
        plan_sweep(["c1"], ["rnn"], [0, 1], [], "{arch}", settings)


def test_search_specs():
    specs = parse_search(["lr=loguniform:1e-4:1e-2", "dropout=uniform:0.1:0.6", "units=choice:16,32,64",
                          "dense=choice:100,20|50,10", "layers=int:1:3"])
    assert specs["lr"].values == (1e-4, 1e-2) and specs["units"].values == (16, 32, 64)
    assert specs["dense"].values == ("100,20", "50,10") and specs["layers"].values == (1, 3)
    for bad in ("lr=loguniform:0:1", "lr=uniform:0.5:0.1", "lr=normal:0:1", "lr", "units=int:1:x", "x=choice:"):
        with pytest.raises(UsageError):
            parse_search([bad])


@pytest.mark.parametrize("search, fragment", [
    ("batch_size=int:0:3", "batch_size 0: expected at least 1"),
    ("weight_decay=uniform:-0.1:0.1", "weight_decay -0.1: expected 0 or more"),
    ("clip_norm=choice:-1,1", "clip_norm -1.0: expected 0 (off) or more"),
    ("lr=uniform:0.5:20", "lr 20.0: expected a learning rate from 1e-9 to 10"),
    ("dropout=uniform:0.1:1.5", "dropout must be at least 0 and below 1, got 1.5"),
])
def test_search_values_no_run_can_train_with_are_refused_before_ray_starts(search, fragment):
    """Each searched range's extremes go through the trial's settings: a batch of 0 genes once started
    Ray and its trials (the command line's own --batch-size refuses 0, the search did not)."""
    from histcli.tuning import check_space

    with pytest.raises(UsageError, match=f"^search '{search}': .*{re.escape(fragment)}"):
        check_space("crnn", {}, {}, parse_search([search]))


def test_train_settings_refuse_what_no_run_can_train_with():
    from histcli.training import TrainSettings, settings_for

    assert settings_for("cnn", batch_size=1, clip_norm=0.0, weight_decay=0.0).batch_size == 1
    for setting, value in (("batch_size", 0), ("max_epochs", 0), ("patience", 0), ("lr", 0.0),
                           ("lr", float("nan")), ("weight_decay", float("inf")), ("clip_norm", -1.0)):
        with pytest.raises(UsageError, match=f"^{setting} "):
            settings_for("cnn", **{setting: value})
    with pytest.raises(UsageError, match="lr_schedule 'cosine': expected one of constant, plateau"):
        dataclasses.replace(settings_for("cnn"), lr_schedule="cosine")
    assert isinstance(settings_for("cnn"), TrainSettings)


@pytest.mark.parametrize("command", ["sweep", "tune"])
def test_help_does_not_import_ray_or_torch(command):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "histcli", command, "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in result.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert imported and not imported & {"ray", "torch", "scipy", "pandas"}


def test_resuming_a_sweep_skips_only_an_entry_of_the_same_regression_target(cells, tmp_path):
    """An entry trained on ln(RPKM + 1) is not the entry a sweep for log2(RPKM + 1) asks for: it is
    skipped only for its own target, and the other target is refused as a clash (not silently reused)."""
    from histcli.distributed import check_existing
    from histcli.errors import ModelExistsError
    from histcli.registry import Registry
    from histcli.tasks import make_task
    from histcli.training import settings_for

    models = tmp_path / "models"
    trained = run_cli("train", "--cell", "sim01", "--arch", "logistic", "--task", "regression", "--target", "log1p",
                      "--epochs", 2, "--threads", 1, "--device", "cpu", "-q", env=_env(cells, models))
    assert trained.code == 0, trained.stderr

    def trials(target):
        def make_settings(arch, overrides, seed):
            return settings_for(arch, overrides=overrides, seed=seed, device="cpu", threads=1, max_epochs=2,
                                task=make_task("regression", target))
        return plan_sweep(["sim01"], ["logistic"], [0], [], None, make_settings)

    store, registry = Store(cells), Registry(models)
    skip, _ = check_existing(trials("log1p"), store, registry, overwrite=False, mirror="auto")
    assert skip == {0}
    with pytest.raises(ModelExistsError) as error:
        check_existing(trials("log2p1"), store, registry, overwrite=False, mirror="auto")
    assert error.value.differs == ("task",)


def test_a_sweep_refuses_names_whose_other_cells_do_another_task_before_ray_starts(cells, tmp_path):
    """A regression entry for sim01 named like the sweep's classification trials on sim02 (both default to
    the architecture): one model name is one task, checked for the cells the sweep does not write."""
    from histcli.distributed import check_existing
    from histcli.errors import ModelTaskError
    from histcli.registry import Registry
    from histcli.training import settings_for

    models = tmp_path / "models"
    trained = run_cli("train", "--cell", "sim01", "--arch", "logistic", "--task", "regression", "--epochs", 2,
                      "--threads", 1, "--device", "cpu", "-q", env=_env(cells, models))
    assert trained.code == 0, trained.stderr

    def trials(cell_names):
        def make_settings(arch, overrides, seed):
            return settings_for(arch, overrides=overrides, seed=seed, device="cpu", threads=1, max_epochs=2)
        return plan_sweep(cell_names, ["logistic"], [0], [], None, make_settings)

    store, registry = Store(cells), Registry(models)
    with pytest.raises(ModelTaskError, match=r"^model 'logistic' holds regression entries \(cells sim01\); a "
                                             r"classification entry for cell 'sim02' needs another model name$"):
        check_existing(trials(["sim02"]), store, registry, overwrite=False, mirror="auto")
    # A sweep that replaces sim01 too (--overwrite) leaves no entry of the other task.
    assert check_existing(trials(["sim01", "sim02"]), store, registry, overwrite=True, mirror="auto")[0] == set()


def test_resuming_a_sweep_retrains_nothing_on_changed_expression_values(cells, tmp_path):
    """The cell fingerprint leaves expression values out: a regression entry learnt from other values is
    a clash named 'expression', not an entry to skip."""
    from conftest import copy_store

    from histcli.distributed import check_existing
    from histcli.errors import ModelExistsError
    from histcli.registry import Registry
    from histcli.tasks import make_task
    from histcli.training import settings_for

    store_path, models = tmp_path / "store.h5", tmp_path / "models"
    copy_store(cells, store_path)
    trained = run_cli("train", "--cell", "sim01", "--arch", "logistic", "--task", "regression", "--epochs", 2,
                      "--threads", 1, "--device", "cpu", "-q", env=_env(store_path, models))
    assert trained.code == 0, trained.stderr

    def make_settings(arch, overrides, seed):
        return settings_for(arch, overrides=overrides, seed=seed, device="cpu", threads=1, max_epochs=2,
                            task=make_task("regression"))

    trials = plan_sweep(["sim01"], ["logistic"], [0], [], None, make_settings)
    store, registry = Store(store_path), Registry(models)
    assert check_existing(trials, store, registry, overwrite=False, mirror="auto")[0] == {0}
    cell = store.load("sim01")
    store.write([dataclasses.replace(cell, expression=cell.expression * 2, fingerprint=None)], overwrite=True)
    assert store.fingerprint("sim01") == cell.fingerprint  # the premise: the fingerprint did not see the change
    trials = plan_sweep(["sim01"], ["logistic"], [0], [], None, make_settings)
    with pytest.raises(ModelExistsError) as error:
        check_existing(trials, store, registry, overwrite=False, mirror="auto")
    assert error.value.differs == ("expression",)


def test_resuming_a_sweep_does_not_take_an_older_revision_of_an_architecture_for_a_finished_trial(cells, tmp_path):
    """crnn's chrono-initialised gates (revision 2) train another model than an older histcli's crnn from the
    same settings: an entry without a recorded revision (written before revisions were) is a clash named
    'architecture_revision'. The logistic model never changed (revision 1): its old entry is still skipped."""
    from histcli.distributed import check_existing
    from histcli.errors import ModelExistsError
    from histcli.registry import Registry
    from histcli.training import settings_for

    models = tmp_path / "models"

    def make_settings(arch, overrides, seed):
        return settings_for(arch, overrides=overrides, seed=seed, device="cpu", threads=1, max_epochs=2)

    store, registry = Store(cells), Registry(models)
    for arch, revision in (("logistic", 1), ("crnn", 2)):
        trained = run_cli("train", "--cell", "sim01", "--arch", arch, "--epochs", 2, "--threads", 1,
                          "--device", "cpu", "-q", env=_env(cells, models))
        assert trained.code == 0, trained.stderr
        config_path = models / arch / "sim01" / "config.json"
        config = json.loads(config_path.read_text())
        assert config["architecture_revision"] == revision
        trials = plan_sweep(["sim01"], [arch], [0], [], None, make_settings)
        assert check_existing(trials, store, registry, overwrite=False, mirror="auto")[0] == {0}
        del config["architecture_revision"]
        config_path.write_text(json.dumps(config))
        if revision == 1:
            assert check_existing(trials, store, registry, overwrite=False, mirror="auto")[0] == {0}
        else:
            with pytest.raises(ModelExistsError) as error:
                check_existing(trials, store, registry, overwrite=False, mirror="auto")
            assert error.value.differs == ("architecture_revision",)


def test_resuming_a_sweep_takes_an_entry_from_before_refits_for_a_no_refit_trial_only(cells, tmp_path):
    """An entry written before refits existed holds the chosen run: a --no-refit trial skips it, a refit
    trial (the default) names the clash 'training'."""
    from histcli.distributed import check_existing
    from histcli.errors import ModelExistsError
    from histcli.registry import Registry
    from histcli.training import settings_for

    models = tmp_path / "models"
    trained = run_cli("train", "--cell", "sim01", "--arch", "logistic", "--epochs", 2, "--threads", 1,
                      "--device", "cpu", "--no-refit", "-q", env=_env(cells, models))
    assert trained.code == 0, trained.stderr
    config_path = models / "logistic" / "sim01" / "config.json"
    config = json.loads(config_path.read_text())
    assert config["training"].pop("refit") is False
    config_path.write_text(json.dumps(config))
    store, registry = Store(cells), Registry(models)

    def plan(refit):
        return plan_sweep(["sim01"], ["logistic"], [0], [], None, lambda arch, overrides, seed: settings_for(
            arch, overrides=overrides, seed=seed, device="cpu", threads=1, max_epochs=2, refit=refit))

    assert check_existing(plan(False), store, registry, overwrite=False, mirror="auto")[0] == {0}
    with pytest.raises(ModelExistsError) as error:
        check_existing(plan(True), store, registry, overwrite=False, mirror="auto")
    assert error.value.differs == ("training.refit",)


@pytest.mark.parametrize("search, option", [("lr=loguniform:1e-3:1e-2", "--lr=0.05"),
                                            ("weight_decay=uniform:0:0.1", "--weight-decay=0.5"),
                                            ("batch_size=choice:16,32", "--batch-size=64"),
                                            ("clip_norm=uniform:0:1", "--clip-norm=2")])
def test_tune_refuses_a_training_option_it_would_search_over(cells, tmp_path, search, option):
    """Every trial, and the saved model, takes the searched value (trial_settings), so the option would be
    silently ignored: tune refuses the pair before searching, naming both options."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'histcli[ray]')")
    from histcli.registry import Registry
    from histcli.tuning import check_space, trial_settings

    key = search.split("=")[0]
    searched = parse_search([search])[key].values[0]
    assert getattr(trial_settings("logistic", {key: 7}, {}, {key: searched}), key) == searched
    check_space("logistic", {key: None}, {}, parse_search([search]))  # not given: nothing to refuse
    models = tmp_path / "models"
    result = run_cli("tune", "--cell", "sim01", "--arch", "logistic", "--search", search, option, "--samples", 1,
                     "--epochs", 2, env=_env(cells, models))
    assert_one_line_error(result, f"--search and {option.split('=')[0]} cannot be combined",
                          f"{key} is both searched and fixed", code=2)
    assert not models.exists() or Registry(models).names() == []


def test_grid_values_spelled_differently_for_the_same_setting_are_refused():
    """dropout=0.3 and dropout=0.30 (or dense=100,20 and dense=(100,20)) are one setting: a sweep would train
    the same model twice under two entry names."""
    from histcli.training import settings_for

    def make_settings(arch, overrides, seed):
        return settings_for(arch, overrides=overrides, seed=seed)

    assert make_settings("cnn", {"dropout": "0.3"}, 0) == make_settings("cnn", {"dropout": "0.30"}, 0)
    with pytest.raises(UsageError, match=r"dropout=0\.3 and dropout=0\.30': these grid points train the same cnn"):
        plan_sweep(["c1"], ["cnn"], [0, 1], ["dropout=0.3", "dropout=0.30"], None, make_settings)
    with pytest.raises(UsageError, match=r"dense=100,20 units=8 and dense=\(100,20\) units=8'"):
        plan_sweep(["c1"], ["rnn"], [0], ["dense=100,20", "dense=(100,20)", "units=8", "units=16"], None,
                   make_settings)
    trials = plan_sweep(["c1"], ["cnn"], [0], ["dropout=0.3", "dropout=0.35"], None, make_settings)
    assert [t.name for t in trials] == ["cnn-dropout0.3", "cnn-dropout0.35"]


def test_tune_on_a_cell_no_trial_can_train_on_is_one_line_before_searching(cells, tmp_path):
    """Validation genes of one class: every trial would fail alike (Tune printed each failure's traceback, per
    retry); tune stops before searching with the training's own message."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'histcli[ray]')")
    cell = Store(cells).load("sim01")
    labels = cell.labels.copy()
    labels[cell.split_mask("valid")] = 0
    store = tmp_path / "store.h5"
    Store(store).write([dataclasses.replace(cell, labels=labels, fingerprint=None)])
    result = run_cli("tune", "--cell", "sim01", "--arch", "logistic", "--search", "lr=loguniform:1e-3:1e-2",
                     "--samples", 2, "--epochs", 1, env=_env(store, tmp_path / "models"))
    assert_one_line_error(result, "cell sim01: every valid gene has label 0; AUC is undefined")
    assert "search done" not in result.stderr and "ERROR" not in result.stderr


def test_a_kernel_of_the_wrong_length_is_refused_when_settings_are_resolved(cells, tmp_path):
    """The 2-D kernel's length was checked only when a module was built, so a sweep or a search started Ray and
    failed in every trial; it is a hyperparameter check like the others, made before anything runs."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'histcli[ray]')")
    from histcli.errors import HyperparameterError
    from histcli.training import settings_for

    for arch in ("cnn", "crnn"):
        with pytest.raises(HyperparameterError, match=rf"^{arch}: kernel needs two sizes.*got \(3, 3, 3\)$"):
            settings_for(arch, overrides={"kernel": "3,3,3"})
    assert settings_for("cnn", overrides={"kernel": "5,2"}).hyperparameters["kernel"] == (5, 2)
    env = _env(cells, tmp_path / "models")
    swept = run_cli("sweep", "--cell", "sim01", "--arch", "cnn", "--param", "kernel=3", "--param", "kernel=3,3",
                    "--epochs", 1, env=env)
    assert_one_line_error(swept, "cnn: kernel needs two sizes", "got (3,)", code=2)
    tuned = run_cli("tune", "--cell", "sim01", "--arch", "crnn", "--search", "kernel=choice:3,3|3", "--samples", 1,
                    "--epochs", 1, env=env)
    assert_one_line_error(tuned, "--search 'kernel=choice:3,3|3'", "crnn: kernel needs two sizes", code=2)
    assert "search done" not in tuned.stderr


def test_tune_names_a_bad_param_as_the_problem_not_the_search():
    """A fixed --param that no trial can take is reported as itself; it was reported against the first
    --search spec, which was fine."""
    from histcli.errors import HyperparameterError
    from histcli.tuning import check_space

    specs = parse_search(["lr=loguniform:1e-3:1e-2"])
    for fixed, fragment in (({"nope": "1"}, "unknown hyperparameter(s) nope"),
                            ({"dropout": "2"}, "dropout must be at least 0 and below 1, got 2.0")):
        with pytest.raises(HyperparameterError, match=r"^cnn: ") as error:
            check_space("cnn", {}, fixed, specs)
        assert fragment in str(error.value) and "lr=" not in str(error.value)
    check_space("cnn", {}, {"dropout": "0.2"}, specs)


def test_a_failed_tune_trial_is_one_warning_line_without_tracebacks(cells, tmp_path):
    """A sampled kernel too wide for the cell's 20 bins fails its trial on the worker: Tune logged the worker's
    traceback on stderr; the command now prints one warning per failed trial with histcli's own message."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'histcli[ray]')")
    result = run_cli("tune", "--cell", "sim01", "--arch", "deepchrome", "--search", "kernel=choice:5,18",
                     "--samples", 3, "--epochs", 1, "--retries", 0, "--seed", 1, "-f", "json",
                     env=_env(cells, tmp_path / "models"))
    assert "Traceback" not in result.stderr and "ERROR" not in result.stderr, result.stderr
    expected = "deepchrome needs at least 22 bins (kernel 18 + pool 5 - 1), got 20"  # 18 + 5 - 1 > 20 bins
    warnings = [line for line in result.stderr.splitlines() if line.startswith("histcli: warning: trial")]
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)
    failed = [row for row in rows if row["status"] == "failed"]
    assert failed and all(row["kernel"] == 18 for row in failed)
    assert all(row["status"] != "failed" for row in rows if row["kernel"] == 5)
    assert warnings == [f"histcli: warning: trial {row['trial']} (kernel=18) failed: {expected}; use more bins or a "
                        "smaller kernel or pool" for row in failed]


@pytest.mark.parametrize("args, said", [
    (["--cell", "sim01", "--lr", "0.05"], "--search and --lr cannot be combined: lr is both searched and fixed"),
    (["--cell", "nosuch"], "no cell 'nosuch'"),
])
def test_tune_refused_before_searching_says_only_why(cells, tmp_path, args, said):
    """tune announced 'searching ... configurations' before finding that it could not start: a refusal is the
    one error line, the announcement comes once the search does start."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'histcli[ray]')")
    result = run_cli("tune", "--arch", "logistic", "--search", "lr=loguniform:1e-3:1e-2", "--samples", 1,
                     "--epochs", 1, *args, env=_env(cells, tmp_path / "models"))
    assert result.code in (1, 2)
    assert len(result.stderr.splitlines()) == 1 and said in result.stderr, result.stderr


def test_tune_notes_count_one_configuration_and_one_trial(cells, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'histcli[ray]')")
    result = run_cli("tune", "--cell", "sim01", "--arch", "logistic", "--search", "lr=loguniform:1e-3:1e-2",
                     "--samples", 1, "--epochs", 1, "--max-concurrent", 1, env=_env(cells, tmp_path / "models"))
    assert result.code == 0, result.stderr
    assert "searching logistic on sim01: 1 configuration, asha scheduler" in result.stderr
    assert "search done: 1 trial completed, 0 stopped early, 0 failed" in result.stderr


@pytest.mark.parametrize("command", ["sweep", "tune"])
def test_nan_gpus_per_trial_is_bad_usage(cells, tmp_path, command):
    """click's range check let nan through to Ray, whose resource arithmetic ended in a traceback."""
    search = ["--search", "lr=loguniform:1e-3:1e-2"] if command == "tune" else []
    result = run_cli(command, "--cell", "sim01", "--arch", "logistic", *search, "--epochs", 1,
                     "--gpus-per-trial", "nan", env=_env(cells, tmp_path / "models"))
    assert_one_line_error(result, "Invalid value for '--gpus-per-trial': nan is not a number", code=2)
    assert len(result.stderr.splitlines()) == 1
