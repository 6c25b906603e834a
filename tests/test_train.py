"""`histcli train` and the model registry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import assert_one_line_error, file_digest, parse_tsv, run_cli, shared_data

from histcli.errors import ModelError
from histcli.registry import Registry, read_entry
from histcli.store import SPLIT_CODES, Store
from histcli.training import resolve_mirror


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """Three simulated cells of 900 genes x 20 bins."""
    folder = tmp_path_factory.mktemp("train")
    store = folder / "store.h5"
    result = run_cli("prepare", "simulate", "--cells", 3, "--genes", 900, "--bins", 20, "--seed", 5,
                     "--store", store, "-q")
    assert result.code == 0, result.stderr
    return store


def train(store, models, *args):
    return run_cli("train", "--store", store, "--models", models, "--device", "cpu", "-q", "-f", "tsv", *args)


def test_entry_holds_weights_config_and_metadata(small_store, tmp_path):
    models = tmp_path / "models"
    result = train(small_store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 6, "--seed", 3)
    assert result.code == 0, result.stderr
    (row,) = parse_tsv(result.stdout)
    assert row["model"] == "logistic" and row["cell"] == "sim01" and row["seed"] == "3"
    entry = Registry(models).get("logistic", "sim01")
    assert sorted(p.name for p in entry.path.iterdir()) == ["config.json", "metadata.json", "weights.safetensors"]
    # safetensors: an 8-byte little-endian header length, then a JSON header; never a pickle.
    raw = entry.weights_path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert json.loads(header["__metadata__"]["histcli"]) == {"architecture": "logistic", "format": "histcli-model"}
    config, metadata = entry.config, entry.metadata
    assert config["architecture"] == "logistic"
    assert config["input"] == {"marks": ["H3K4me3", "H3K4me1", "H3K36me3", "H3K9me3", "H3K27me3"],
                               "n_bins": 20, "bin_size": 100, "window": 1000, "tss_offset": 1000,
                               "transform": "log1p", "mirror": False, "source_format": "simulated",
                               "aggregate": None}
    assert config["data"]["fingerprint"] == Store(small_store).fingerprint("sim01")
    assert config["data"]["split_sizes"] == {"train": 300, "valid": 300, "test": 300}
    # 300 training genes: batches of 32 (300 // 20 = 15 is below the smallest automatic batch).
    assert config["training"]["seed"] == 3 and config["training"]["batch_size"] == 32
    assert config["training"]["max_epochs"] == 6
    # Simulated genes run 5' to 3', so --mirror auto leaves them as they are.
    assert config["training"]["mirror"] is False
    assert config["hyperparameters"] == {}  # logistic has no shape hyperparameters
    assert config["training"]["lr"] == 0.01 and config["training"]["weight_decay"] == 1e-4  # its defaults
    assert metadata["weights_sha256"] == file_digest(entry.weights_path)
    assert set(metadata["versions"]) == {"histcli", "torch", "numpy", "python"}
    history = metadata["history"]
    assert [h["epoch"] for h in history] == list(range(1, metadata["epochs_run"] + 1))
    best = max(history, key=lambda h: h["valid_auc"])
    assert metadata["best_epoch"] == best["epoch"]
    assert metadata["best_valid_auc"] == pytest.approx(best["valid_auc"])
    assert float(row["valid_auc"]) == pytest.approx(best["valid_auc"])


def test_saved_weights_are_the_best_epoch(small_store, tmp_path):
    """Without a refit, re-scoring the validation split with the saved weights reproduces the recorded best AUC."""
    models = tmp_path / "models"
    result = train(small_store, models, "--cell", "sim02", "--arch", "deepchrome", "--epochs", 5, "--no-refit")
    assert result.code == 0, result.stderr
    evaluated = run_cli("evaluate", "deepchrome", "--split", "valid", "--store", small_store, "--models", models,
                        "-f", "json", "-q")
    assert evaluated.code == 0, evaluated.stderr
    (row,) = json.loads(evaluated.stdout)["rows"]
    metadata = Registry(models).get("deepchrome", "sim02").metadata
    assert row["auc"] == pytest.approx(metadata["best_valid_auc"], abs=1e-6)


def test_early_stopping_follows_patience(small_store, tmp_path):
    models = tmp_path / "models"
    result = train(small_store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 300,
                   "--patience", 3, "--lr", "0.05")
    assert result.code == 0, result.stderr
    metadata = Registry(models).get("logistic", "sim01").metadata
    history = [h["valid_auc"] for h in metadata["history"]]
    best_epoch = metadata["best_epoch"]
    assert metadata["epochs_run"] < 300, "a learning rate of 0.05 plateaus long before 300 epochs"
    assert metadata["epochs_run"] == best_epoch + 3
    assert all(auc <= metadata["best_valid_auc"] for auc in history[best_epoch:])


@pytest.mark.parametrize("arch", ["crnn", "attentivechrome"])
def test_cpu_training_is_deterministic_for_a_seed(small_store, tmp_path, arch):
    runs = []
    for folder, seed in (("a", 1), ("b", 1), ("c", 2)):
        models = tmp_path / folder
        result = train(small_store, models, "--cell", "sim03", "--arch", arch, "--epochs", 2, "--seed", seed,
                       "--threads", 2)
        assert result.code == 0, result.stderr
        runs.append(Registry(models).get(arch, "sim03").load_state())
    assert runs[0].keys() == runs[1].keys()
    # Identical weights, bit for bit (the safetensors header order may differ, so compare tensors).
    assert all(np.array_equal(runs[0][key].numpy(), runs[1][key].numpy()) for key in runs[0])
    assert not all(np.array_equal(runs[0][key].numpy(), runs[2][key].numpy()) for key in runs[0])


def test_retraining_needs_overwrite(small_store, tmp_path):
    models = tmp_path / "models"
    assert train(small_store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 2).code == 0
    digest = file_digest(Registry(models).get("logistic", "sim01").weights_path)
    result = train(small_store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 2, "--seed", 9)
    assert_one_line_error(result, "'logistic' for cell 'sim01' already exists", "--overwrite")
    assert file_digest(Registry(models).get("logistic", "sim01").weights_path) == digest
    result = train(small_store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 2, "--seed", 9,
                   "--overwrite")
    assert result.code == 0, result.stderr
    assert file_digest(Registry(models).get("logistic", "sim01").weights_path) != digest


def test_parallel_training_from_a_bash_loop_into_one_registry(small_store, tmp_path):
    models = tmp_path / "models"
    script = (
        "set -e\n"
        "for cell in sim01 sim02 sim03; do\n"
        "  for arch in logistic deepchrome; do\n"
        f"    {sys.executable} -m histcli train --cell $cell --arch $arch --epochs 2 --device cpu "
        f"--store {small_store} --models {models} -q >/dev/null &\n"
        "  done\n"
        "done\n"
        "wait\n"
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    registry = Registry(models)
    assert registry.names() == ["deepchrome", "logistic"]
    for name in registry.names():
        assert registry.cells(name) == ["sim01", "sim02", "sim03"]
        for cell in registry.cells(name):
            registry.get(name, cell).build_module()  # complete and loadable
    assert not [p for p in models.rglob(".*tmp-*")]


def test_models_list_show_and_rm(small_store, tmp_path):
    models = tmp_path / "models"
    for cell in ("sim01", "sim02"):
        assert train(small_store, models, "--cell", cell, "--arch", "logistic", "--epochs", 2).code == 0
    listed = parse_tsv(run_cli("models", "list", "--models", models, "-f", "tsv").stdout)
    assert [(r["model"], r["cell"]) for r in listed] == [("logistic", "sim01"), ("logistic", "sim02")]
    filtered = parse_tsv(run_cli("models", "list", "--models", models, "--cell", "sim02", "-f", "tsv").stdout)
    assert [r["cell"] for r in filtered] == ["sim02"]
    shown = json.loads(run_cli("models", "show", "logistic", "--cell", "sim01", "--models", models, "-f", "json").stdout)
    assert shown["config"]["architecture"] == "logistic"
    assert shown["metadata"]["best_epoch"] >= 1
    removed = run_cli("models", "rm", "logistic", "--cell", "sim01", "--models", models, "-f", "tsv")
    assert [(r["model"], r["cell"]) for r in parse_tsv(removed.stdout)] == [("logistic", "sim01")]
    assert Registry(models).cells("logistic") == ["sim02"]
    assert (models / "logistic").is_dir()  # the model's folder stays while it has an entry
    result = run_cli("models", "show", "logistic", "--cell", "sim01", "--models", models)
    assert_one_line_error(result, "no model 'logistic' for cell 'sim01'", "sim02")
    assert train(small_store, models, "--cell", "sim03", "--arch", "logistic", "--epochs", 1).code == 0
    removed = run_cli("models", "rm", "logistic", "--models", models, "-f", "tsv")
    assert [r["cell"] for r in parse_tsv(removed.stdout)] == ["sim02", "sim03"]
    assert Registry(models).names() == []
    assert not (models / "logistic").exists()  # with its last entry, the model's folder goes too
    assert train(small_store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 1).code == 0
    assert Registry(models).names() == ["logistic"]
    # A file given for the registry is named, not read as an empty registry.
    for command in (["models", "list"], ["evaluate", "logistic", "--store", small_store],
                    ["train", "--cell", "sim01", "--arch", "logistic", "--store", small_store]):
        result = run_cli(*command, "--models", small_store)
        assert_one_line_error(result, f"{small_store}: is a file, not a model registry folder")


def test_training_needs_labels_and_known_cells(small_store, tmp_path):
    models = tmp_path / "models"
    result = train(small_store, models, "--cell", "nope", "--arch", "logistic")
    assert_one_line_error(result, "no cell 'nope'", "sim01")
    # Bad arguments (exit code 2): an architecture, a hyperparameter or a value it cannot take, a name.
    result = train(small_store, models, "--cell", "sim01", "--arch", "transformer")
    assert_one_line_error(result, "--arch 'transformer': expected one of", "crnn", code=2)
    result = train(small_store, models, "--cell", "sim01", "--arch", "crnn", "--param", "units=many")
    assert_one_line_error(result, "hyperparameter units expects an integer, got 'many'", code=2)
    result = train(small_store, models, "--cell", "sim01", "--arch", "crnn", "--param", "layers=2")
    assert_one_line_error(result, "unknown hyperparameter(s) layers", "units", code=2)
    result = train(small_store, models, "--cell", "sim01", "--arch", "crnn", "--param", "dropout=1.5")
    assert_one_line_error(result, "dropout must be at least 0 and below 1, got 1.5", code=2)
    result = train(small_store, models, "--cell", "sim01", "--arch", "logistic", "--name", "../up")
    assert_one_line_error(result, "model name '../up' is not allowed", code=2)
    assert not models.exists() or Registry(models).names() == []
    # Nor does models list read a folder outside the registry by its name.
    (models.parent / "up").mkdir(exist_ok=True)
    listed = run_cli("models", "list", "-n", "../up", "--models", models)
    assert_one_line_error(listed, "model name '../up' is not allowed", code=2)
    result = train(small_store, models, "--arch", "crnn")
    assert_one_line_error(result, "--all-cells", code=2)
    result = train(small_store, models, "--arch", "crnn", "--all-cells", "--cell", "sim01")
    assert_one_line_error(result, "--cell and --all-cells cannot be combined", code=2)
    for seed_option in (["--seed", "-1"], ["--seed", str(2**64)], ["--seeds", f"0,{2**64}"],
                        ["--seeds", "0-100000000000"]):  # listing the range first filled memory
        result = train(small_store, models, "--cell", "sim01", "--arch", "logistic", *seed_option)
        assert_one_line_error(result, seed_option[0], code=2)  # torch's generators take 0 to 2**64 - 1


def test_ctrl_c_saves_the_best_epoch_marked_interrupted(small_store, tmp_path):
    models = tmp_path / "models"
    process = subprocess.Popen(
        [sys.executable, "-m", "histcli", "train", "--cell", "sim01", "--arch", "logistic", "--epochs", "100000",
         "--patience", "100000", "--store", str(small_store), "--models", str(models), "-q", "-f", "json",
         "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(8)  # imports, then many short epochs
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    entry = Registry(models).get("logistic", "sim01")
    assert entry.metadata["interrupted"] is True
    assert entry.metadata["epochs_run"] > 1
    assert json.loads(stdout)[0]["interrupted"] is True


def test_ctrl_c_before_the_first_epoch_saves_nothing(small_store, tmp_path):
    """Ctrl-C arrives in the first batch (raised from inside the loss, deterministically)."""
    models = tmp_path / "models"
    script = (
        "import runpy, sys, torch\n"
        "def interrupted(self, *args, **kwargs):\n"
        "    raise KeyboardInterrupt\n"
        "torch.nn.BCEWithLogitsLoss.forward = interrupted\n"
        f"sys.argv = ['histcli', 'train', '--cell', 'sim01', '--arch', 'logistic', '--store', {str(small_store)!r}, "
        f"'--models', {str(models)!r}]\n"
        "runpy.run_module('histcli', run_name='__main__')\n"
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert process.returncode == 130, process.stderr
    assert "Traceback" not in process.stderr
    assert "interrupted before the first epoch ended; nothing saved" in process.stderr
    assert process.stdout == ""
    assert not Registry(models).exists("logistic", "sim01")


def test_divergence_is_a_clear_error(small_store, tmp_path):
    """A model whose outputs blow up stops with a message, not a traceback, and saves nothing."""
    models = tmp_path / "models"
    script = (
        "import runpy, sys, torch\n"
        "from histcli.models import logistic\n"
        "original = logistic.LogisticRegression.forward\n"
        "logistic.LogisticRegression.forward = lambda self, x: original(self, x) * float('inf')\n"
        f"sys.argv = ['histcli', 'train', '--cell', 'sim01', '--arch', 'logistic', '--store', {str(small_store)!r}, "
        f"'--models', {str(models)!r}]\n"
        "runpy.run_module('histcli', run_name='__main__')\n"
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert process.returncode == 1, process.stderr
    assert "Traceback" not in process.stderr
    assert "training diverged at epoch 1" in process.stderr and "--lr" in process.stderr
    assert not Registry(models).exists("logistic", "sim01")


def test_loading_checks_the_entry_against_the_data(small_store, tmp_path):
    models = tmp_path / "models"
    assert train(small_store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 2).code == 0
    other = tmp_path / "other.h5"
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 300, "--bins", 10, "--store", other,
                   "--prefix", "ten", "-q").code == 0
    result = run_cli("evaluate", "logistic", "--cell", "sim01", "--on-cell", "ten01", "--store", other,
                     "--models", models)
    assert_one_line_error(result, "expects 20 bins of 100 bp", "ten01 has 10 bins")
    entry_folder = Registry(models).get("logistic", "sim01").path
    (entry_folder / "weights.safetensors").write_bytes(b"broken")
    result = run_cli("evaluate", "logistic", "--store", small_store, "--models", models)
    assert_one_line_error(result, str(entry_folder / "weights.safetensors"), "damaged weights file")
    (entry_folder / "metadata.json").write_text("{}")
    result = run_cli("evaluate", "logistic", "--store", small_store, "--models", models)
    assert_one_line_error(result, "metadata.json", "damaged", "best_epoch")


@pytest.mark.slow
def test_every_deep_architecture_beats_chance_on_deepdiff_cell1(tmp_path):
    data = shared_data("deepdiff-cell1")
    store, models = tmp_path / "s.h5", tmp_path / "models"
    assert run_cli("prepare", "deepdiff", data, "--cell", "Cell1", "--store", store, "-q").code == 0
    for arch in ("crnn", "cnn", "rnn", "deepchrome", "attentivechrome"):
        result = train(store, models, "--cell", "Cell1", "--arch", arch, "--epochs", 15, "--patience", 5)
        assert result.code == 0, result.stderr
    evaluated = run_cli("evaluate", "crnn", "cnn", "rnn", "deepchrome", "attentivechrome", "--store", store,
                        "--models", models, "-f", "json", "-q")
    rows = {row["model"]: row for row in json.loads(evaluated.stdout)["rows"]}
    for arch, row in rows.items():
        assert row["n"] == 200
        assert row["auc"] > 0.65, (arch, row["auc"])


def test_read_entry_of_a_copied_folder(small_store, tmp_path):
    import shutil

    models = tmp_path / "models"
    assert train(small_store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 2).code == 0
    copy = tmp_path / "elsewhere"
    shutil.copytree(Registry(models).get("logistic", "sim01").path, copy)
    entry = read_entry(copy)
    assert entry.name == "logistic" and entry.cell == "sim01"
    state = entry.load_state()
    assert all(np.isfinite(t.numpy()).all() for t in state.values())
    # The typed view of config.json's input and data equals what was written, key for key.
    assert entry.input.to_json() == entry.config["input"] and entry.data.to_json() == entry.config["data"]
    assert entry.input.marks == tuple(entry.config["input"]["marks"]) and entry.data.expression_sha256 is None
    config = json.loads((copy / "config.json").read_text())
    del config["input"]["tss_offset"]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"config.json: damaged, input.tss_offset missing"):
        read_entry(copy)


def test_mirror_resolution_follows_the_cell_orientation():
    assert resolve_mirror("auto", {"orientation": "unknown"}) is True
    assert resolve_mirror("auto", {"orientation": "partly unknown"}) is True
    assert resolve_mirror("auto", {"orientation": "5' to 3'"}) is False
    assert resolve_mirror("auto", {}) is False  # DeepChrome, DeepDiff and simulated cells
    assert resolve_mirror("on", {"orientation": "5' to 3'"}) is True
    assert resolve_mirror("off", {"orientation": "unknown"}) is False


def test_mirror_auto_warns_about_track_cells_stored_without_orientation(caplog):
    """Stores written before the orientation attribute: taken as 5' to 3', with a warning saying so."""
    with caplog.at_level("WARNING", logger="histcli"):
        assert resolve_mirror("auto", {"source_format": "tracks", "aggregate": "sum"}, "cell E003") is False
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith("cell E003 was prepared") and "--mirror on" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="histcli"):
        assert resolve_mirror("auto", {"source_format": "tracks", "orientation": "unknown"}) is True
        assert resolve_mirror("on", {"source_format": "tracks"}) is True
        assert resolve_mirror("auto", {}) is False
    assert caplog.records == []


def test_mirrored_models_predict_the_same_for_both_orientations(small_store, tmp_path):
    """--mirror on averages both orientations; without it a reversed gene scores differently."""
    from histcli.evaluation import predict_scores
    from histcli.metrics import roc_auc

    models = tmp_path / "models"
    for name, mirror in (("mirrored", "on"), ("plain", "off")):
        result = train(small_store, models, "--cell", "sim01", "--arch", "cnn", "--epochs", 2,
                       "--name", name, "--mirror", mirror)
        assert result.code == 0, result.stderr
    cell = Store(small_store).load("sim01")
    inputs = np.log1p(cell.counts[:200].astype(np.float32))
    reversed_inputs = np.ascontiguousarray(inputs[:, ::-1])
    mirrored = Registry(models).get("mirrored", "sim01")
    assert mirrored.config["input"]["mirror"] is True and mirrored.config["training"]["mirror"] is True
    forward = predict_scores(mirrored, inputs)
    assert np.allclose(forward, predict_scores(mirrored, reversed_inputs), atol=1e-6)
    plain = Registry(models).get("plain", "sim01")
    assert not np.allclose(predict_scores(plain, inputs), predict_scores(plain, reversed_inputs),
                           atol=1e-3)
    # The cached predictions of evaluate use the same averaging.
    evaluated = run_cli("evaluate", "mirrored", "--split", "test", "--store", small_store, "--models", models,
                        "-f", "json", "-q")
    assert evaluated.code == 0, evaluated.stderr
    test = cell.split == SPLIT_CODES["test"]
    expected = roc_auc(cell.labels[test], predict_scores(mirrored, np.log1p(cell.counts[test].astype(np.float32))))
    assert json.loads(evaluated.stdout)["rows"][0]["auc"] == pytest.approx(expected, abs=1e-6)


def test_entry_files_are_readable_as_the_umask_allows(small_store, tmp_path):
    """A registry shared by a lab: weights get the same permissions as config.json and metadata.json (the
    umask's), not the owner-only 0600 that safetensors' own writer gives."""
    models = tmp_path / "models"
    previous = os.umask(0o002)  # the trainer inherits it
    try:
        for args in (("--name", "single"), ("--name", "pair", "--seeds", "0-1")):
            result = train(small_store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 2, *args)
            assert result.code == 0, result.stderr
    finally:
        os.umask(previous)
    for name, weights in (("single", ["weights.safetensors"]),
                          ("pair", ["weights-seed0.safetensors", "weights-seed1.safetensors"])):
        modes = {path.name: path.stat().st_mode & 0o777 for path in (models / name / "sim01").iterdir()}
        assert modes == {"config.json": 0o664, "metadata.json": 0o664, **{file: 0o664 for file in weights}}


def test_weights_removed_under_a_reader_are_named_in_the_error(small_store, tmp_path):
    """`models rm` (or an overwrite) while `evaluate` loads the entry: the one-line error names the weights
    file; safetensors' own error has no file name, and the message was "file: no such file or directory"."""
    from histcli.errors import describe

    models = tmp_path / "models"
    assert train(small_store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 2).code == 0
    entry = Registry(models).get("logistic", "sim01")
    entry.weights_path.unlink()
    with pytest.raises(FileNotFoundError) as caught:
        entry.build_module()
    assert describe(caught.value) == (f"{entry.weights_path}: no such file or directory", 1)


def test_train_summary_for_people_is_one_line_per_cell_at_80_columns(monkeypatch):
    """56 cells gave 56 blocks of 12 lines: a terminal gets the columns that fit one line per cell,
    machines every column."""
    import io

    from rich.console import Console

    from histcli import output
    from histcli.cli.train import train_columns
    from histcli.tasks import Classification

    rows = [{"model": "deepchrome-seed3", "cell": f"E{cell:03d}", "arch": "deepchrome", "seeds": [3], "best_epoch": 482,
             "epochs_run": 1000, "valid_auc": 0.91234, "train_genes": 6601, "valid_genes": 6601, "seconds": 1234.5,
             "converged": False, "interrupted": False} for cell in range(3, 6)]
    buffer = io.StringIO()
    monkeypatch.setattr(output, "console", lambda stderr=False: Console(file=buffer, width=80, no_color=True))
    monkeypatch.setattr(output, "stdout_is_terminal", lambda: True)
    output.render_rows(rows, train_columns(Classification(), "table"), "table", title="trained into histcli-data/models")
    lines = [line.split() for line in buffer.getvalue().splitlines()]
    assert "(1 of" not in buffer.getvalue() and max(map(len, buffer.getvalue().splitlines())) <= 80
    assert ["deepchrome-seed3", "E004", "3", "482", "1000", "0.9123", "1234.5", "no"] in lines
    assert [column.key for column in train_columns(Classification(), "tsv")] == [
        "model", "cell", "arch", "seed", "best_epoch", "epochs_run", "valid_auc", "train_genes", "valid_genes",
        "seconds", "converged", "interrupted"]


def test_a_second_run_of_the_same_entry_fails_at_once_while_the_first_trains(small_store, tmp_path):
    import fcntl

    models = tmp_path / "models"
    long_budget = ("--arch", "crnn", "--name", "busy", "--epochs", 1000, "--patience", 1000)
    first = subprocess.Popen(
        [sys.executable, "-m", "histcli", "train", "--store", str(small_store), "--models", str(models),
         "--device", "cpu", "-q", "--cell", "sim01", *map(str, long_budget)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = models / ".locks" / "busy@sim01.training"
        deadline = time.monotonic() + 120
        while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # the file is created just before it is locked
        with open(lock) as probe:  # a shared lock is refused while the first run holds its exclusive one
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)

        second = train(small_store, models, "--cell", "sim01", *long_budget)
        assert_one_line_error(second, "'busy' for cell 'sim01' is being trained", "by another histcli process",
                              "choose another --name")
        assert first.poll() is None  # the second run did not wait for the first to end
        overwrite = train(small_store, models, "--cell", "sim01", *long_budget, "--overwrite")
        assert_one_line_error(overwrite, "is being trained")
        # Other cells of the same name, and other names, are not held.
        assert train(small_store, models, "--cell", "sim02", "--arch", "logistic", "--name", "busy",
                     "--epochs", 2).code == 0
        assert not Registry(models).exists("busy", "sim01")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stderr.close()
    # A run killed outright releases its hold.
    result = train(small_store, models, "--cell", "sim01", "--arch", "logistic", "--name", "busy", "--epochs", 2)
    assert result.code == 0, result.stderr
    assert Registry(models).cells("busy") == ["sim01", "sim02"]


def test_registry_reservations_are_per_entry(tmp_path):
    from histcli.errors import ModelBusyError

    registry = Registry(tmp_path / "models")
    with registry.reserve([("crnn", "E116"), ("crnn", "E003")]):
        with pytest.raises(ModelBusyError, match="'crnn' for cell 'E003' is being trained"):
            with registry.reserve([("crnn", "E005"), ("crnn", "E003")]):
                pass
        with registry.reserve([("crnn", "E005"), ("cnn", "E116")]):
            pass
        # The failed reservation let go of what it held before failing.
        with registry.reserve([("crnn", "E005")]):
            pass
    with registry.reserve([("crnn", "E116")]):
        pass


def test_models_rm_of_an_unknown_model_names_the_known_ones(workspace):
    before = sorted(p.name for p in workspace.models.iterdir() if p.is_dir() and p.name[0] != ".")
    result = workspace.run("models", "rm", "nosuch")
    assert_one_line_error(result, "no model 'nosuch'", f"models in {workspace.models}: {', '.join(before)}")
    assert sorted(p.name for p in workspace.models.iterdir() if p.is_dir() and p.name[0] != ".") == before


def test_models_list_table_calls_an_interrupted_entry_interrupted(workspace, tmp_path):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(workspace.models, models, ignore=shutil.ignore_patterns(".locks"))
    marked = models / "logistic" / "sim02" / "metadata.json"
    marked.write_text(json.dumps({**json.loads(marked.read_text()), "converged": False, "interrupted": True}))
    table = run_cli("models", "list", "--models", models, "-f", "table").stdout
    rows = {tuple(line.split()[:2]): line.split()[-1] for line in table.splitlines()[2:] if line.strip()}
    machine = parse_tsv(run_cli("models", "list", "--models", models, "-f", "tsv").stdout)
    expected = {(r["model"], r["cell"]): "interrupted" if r["interrupted"] == "true" else
                {"true": "yes", "false": "no"}[r["converged"]] for r in machine}
    assert rows == expected and rows[("logistic", "sim02")] == "interrupted"


def test_models_list_says_what_exists_when_a_filter_matches_nothing(workspace):
    names = sorted(p.name for p in workspace.models.iterdir() if p.is_dir() and p.name[0] != ".")
    cells = sorted({c.name for n in names for c in (workspace.models / n).iterdir() if c.is_dir()})
    for args, expected in (
            (("--name", "nosuch"), f"no entry for model 'nosuch'; models in {workspace.models}: {', '.join(names)}"),
            (("--name", "logistic", "--cell", "sim09"),
             f"no entry for model 'logistic' and cell 'sim09'; model 'logistic' exists for {', '.join(cells)}"),
            (("--cell", "sim09"), f"no entry for cell 'sim09' in {workspace.models}; cells with entries: "
                                  f"{', '.join(cells)}")):
        result = workspace.run("models", "list", *args, "-f", "tsv")
        assert result.code == 0 and parse_tsv(result.stdout) == []
        assert result.stderr == f"histcli: note: {expected}\n"
    found = workspace.run("models", "list", "--name", "logistic", "-f", "tsv")
    assert found.stderr == "" and len(parse_tsv(found.stdout)) == 3


def test_damaged_entries_are_named_by_models_list_and_removable_by_rm(workspace, tmp_path):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(workspace.models, models, ignore=shutil.ignore_patterns(".locks"))
    (models / "deepchrome" / "sim02" / "config.json").write_text("{bad")
    (models / "logistic" / "sim01" / "weights.safetensors").unlink()
    damaged = {("deepchrome", "sim02"), ("logistic", "sim01")}
    every = {(m.name, c.name) for m in models.iterdir() if m.is_dir() and m.name[0] != "." for c in m.iterdir()}
    listed = run_cli("models", "list", "--models", models, "-f", "tsv")
    assert listed.code == 0, listed.stderr
    assert {(r["model"], r["cell"]) for r in parse_tsv(listed.stdout)} == every - damaged
    notes = listed.stderr.splitlines()
    assert len(notes) == 2 and all(line.startswith("histcli: note: left out a damaged entry: ") for line in notes)
    assert f"{models / 'deepchrome' / 'sim02'}: damaged model configuration" in notes[0]
    assert f"{models / 'logistic' / 'sim01'}: weights.safetensors is missing" in notes[1]
    removed = run_cli("models", "rm", "deepchrome", "--cell", "sim02", "--models", models, "-f", "tsv")
    assert removed.code == 0, removed.stderr
    assert [(r["model"], r["cell"], r["arch"]) for r in parse_tsv(removed.stdout)] == [("deepchrome", "sim02", "NA")]
    assert "removing a damaged entry" in removed.stderr
    assert not (models / "deepchrome" / "sim02").exists()
    removed = run_cli("models", "rm", "logistic", "--models", models, "-f", "tsv")
    assert removed.code == 0, removed.stderr
    assert [(r["cell"], r["arch"]) for r in parse_tsv(removed.stdout)] == [
        ("sim01", "NA"), ("sim02", "logistic"), ("sim03", "logistic")]
    assert Registry(models).cells("logistic") == []


def test_all_cells_trains_the_others_when_one_cell_cannot_be_trained(small_store, tmp_path):
    """A cell whose validation genes are all of one class fails alone: the cells after it are still trained,
    their rows printed, and the run ends with exit 1 naming the failed cell."""
    import dataclasses

    source = Store(small_store)
    broken = source.load("sim02")
    labels = broken.labels.copy()
    labels[broken.split_mask("valid")] = 1
    store = tmp_path / "store.h5"
    Store(store).write([source.load("sim01"), dataclasses.replace(broken, labels=labels, fingerprint=None),
                        source.load("sim03")])
    models = tmp_path / "models"
    result = train(store, models, "--all-cells", "--arch", "logistic", "--epochs", 2)
    assert_one_line_error(result, "1 of 3 cells failed (sim02", "other cells are trained and saved")
    assert "logistic sim02 failed, nothing saved: cell sim02: every valid gene has label 1" in result.stderr
    rows = parse_tsv(result.stdout)
    assert [row["cell"] for row in rows] == ["sim01", "sim03"]
    registry = Registry(models)
    assert registry.exists("logistic", "sim03") and not registry.exists("logistic", "sim02")
    # The cell after the failure trains exactly as it does alone.
    alone = train(store, tmp_path / "alone", "--cell", "sim03", "--arch", "logistic", "--epochs", 2)
    assert alone.code == 0, alone.stderr
    assert parse_tsv(alone.stdout)[0]["valid_auc"] == rows[1]["valid_auc"]
    # Only failures: nothing is saved, and the message does not claim otherwise.
    only_broken = tmp_path / "broken.h5"
    Store(only_broken).write([dataclasses.replace(broken, name=name, labels=labels, fingerprint=None)
                              for name in ("bad1", "bad2")])
    result = train(only_broken, tmp_path / "none", "--all-cells", "--arch", "logistic", "--epochs", 2)
    assert_one_line_error(result, "2 of 2 cells failed (bad1, bad2", "nothing is saved")
    assert result.stdout == ""


def test_a_kernel_of_the_wrong_length_is_a_usage_error_before_any_cell_trains(small_store, tmp_path):
    """A 2-D kernel needs two sizes: a bad --param value (exit 2) like the other hyperparameter checks, raised
    at the first cell and not repeated as a failure of every cell of --all-cells."""
    models = tmp_path / "models"
    for arch in ("cnn", "crnn"):
        result = train(small_store, models, "--all-cells", "--arch", arch, "--param", "kernel=3,3,3")
        assert_one_line_error(result, f"{arch}: kernel needs two sizes", "got (3, 3, 3)", code=2)
        assert "failed" not in result.stderr
    assert not models.exists() or Registry(models).names() == []


def test_config_records_the_thread_count_torch_trained_with(small_store, tmp_path):
    """Without --threads torch chooses (here from OMP_NUM_THREADS): the entry records that count, not null,
    since a CPU run is reproducible only for a given seed and thread count."""
    models = tmp_path / "models"
    result = run_cli("train", "--cell", "sim01", "--arch", "logistic", "--epochs", 1, "--device", "cpu", "-q",
                     "--store", small_store, "--models", models, env={"OMP_NUM_THREADS": "2"})
    assert result.code == 0, result.stderr
    assert Registry(models).get("logistic", "sim01").config["training"]["threads"] == 2
    result = train(small_store, models, "--cell", "sim01", "--arch", "logistic", "--epochs", 1, "--threads", 1,
                   "--overwrite")
    assert result.code == 0, result.stderr
    assert Registry(models).get("logistic", "sim01").config["training"]["threads"] == 1


def test_a_hyperparameter_given_twice_is_refused_not_overwritten(small_store, tmp_path):
    """--param dropout=0.3 --param dropout=0.5 trained with 0.5 and silently dropped 0.3 (sweep, by contrast,
    makes a grid of a repeated key)."""
    models = tmp_path / "models"
    result = train(small_store, models, "--cell", "sim01", "--arch", "cnn", "--epochs", 1,
                   "--param", "dropout=0.3", "--param", "dropout=0.5")
    assert_one_line_error(result, "--param 'dropout=0.5': dropout is given twice (also dropout=0.3)", code=2)
    assert not models.exists() or Registry(models).names() == []


def test_a_mirrored_ensembles_validation_auc_is_that_of_its_predictions(small_store, tmp_path):
    """A mirrored ensemble predicts its combined logit averaged over both orientations; its recorded validation
    AUC combined the members' orientation-averaged outputs instead, which ranks genes differently (here it
    recorded 0.83668 for a model whose validation AUC is 0.83673)."""
    import torch
    from scipy.stats import rankdata

    from histcli.evaluation import match_inputs
    from histcli.training import predict_logits

    models = tmp_path / "models"
    result = train(small_store, models, "--cell", "sim01", "--arch", "logistic", "--seeds", "0-2", "--epochs", 4,
                   "--threads", 1, "--mirror", "on", "--no-refit")
    assert result.code == 0, result.stderr
    entry = Registry(models).get("logistic", "sim01")
    cell = Store(small_store).load("sim01", splits=["valid"])
    outputs = predict_logits(entry.build_module(), torch.from_numpy(match_inputs(entry, cell)), mirror=True).numpy()
    labels = cell.labels.astype(bool)
    ranks = rankdata(outputs)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    auc = (ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)  # Mann-Whitney U
    assert entry.metadata["best_valid_auc"] == pytest.approx(auc, abs=1e-12)
    assert float(parse_tsv(result.stdout)[0]["valid_auc"]) == pytest.approx(auc, abs=1e-12)


def test_models_list_of_only_damaged_entries_names_them_without_claiming_none_exist(tmp_path):
    """The filter matches an entry, a damaged one: its note says so, and no second note claims there is no
    entry while listing that entry's cell as existing."""
    models = tmp_path / "models"
    (models / "broken" / "sim01").mkdir(parents=True)
    (models / "broken" / "sim01" / "config.json").write_text("{bad")
    for args in (("--name", "broken"), ("--cell", "sim01"), ("--name", "broken", "--cell", "sim01")):
        result = run_cli("models", "list", "--models", models, "-f", "tsv", *args)
        assert result.code == 0 and parse_tsv(result.stdout) == []
        notes = result.stderr.splitlines()
        assert len(notes) == 1, notes
        assert notes[0].startswith(f"histcli: note: left out a damaged entry: {models / 'broken' / 'sim01'}")


def test_a_stored_entry_with_impossible_hyperparameters_is_a_damaged_entry_not_a_param_error(small_store, tmp_path):
    models = tmp_path / "models"
    assert train(small_store, models, "--cell", "sim01", "--arch", "cnn", "--epochs", 1).code == 0
    path = Registry(models).get("cnn", "sim01").path / "config.json"
    config = json.loads(path.read_text())
    config["hyperparameters"]["kernel"] = [3, 3, 3]
    path.write_text(json.dumps(config))
    result = run_cli("evaluate", "cnn", "--store", small_store, "--models", models)
    assert_one_line_error(result, f"{path}: cnn: kernel needs two sizes", code=1)
    assert "--param" not in result.stderr
