"""One command line, one shape: JSON keys are the TSV's names, seeds have one JSON type, fixed names take any
case, and every usage error says where the command's help is."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import parse_tsv, run_cli

from histcli.registry import Registry
from histcli.store import SPLIT_CODES, CellData, SourceFile, Store


def known_cell() -> CellData:
    """7 genes (3 train, 2 valid, 1 test, 1 unsplit) x 4 bins x 2 marks, two source files: every field of
    `store show` is known here."""
    splits = ["train", "train", "train", "valid", "valid", "test", "none"]
    return CellData(
        name="Known1", counts=np.arange(7 * 4 * 2, dtype=np.int32).reshape(7, 4, 2),
        gene_ids=np.array([f"g{i}" for i in range(7)], dtype=object), marks=("H3K4me3", "H3K27me3"),
        bin_size=50, window=100, tss_offset=100, split=np.array([SPLIT_CODES[s] for s in splits], dtype=np.uint8),
        labels=np.array([1, 0, 1, 0, 0, 1, 1], dtype=np.int8),
        sources=[SourceFile("/data/a.csv", "a" * 64), SourceFile("/data/b.csv", "b" * 64)],
        attrs={"source_format": "deepchrome", "label_rule": "labels as given"},
    )


def test_store_show_json_has_the_tsv_fields_with_sources_as_a_list(tmp_path):
    store = tmp_path / "s.h5"
    Store(store).write([known_cell()])
    tsv = {row["field"]: row["value"] for row in parse_tsv(run_cli("store", "show", "Known1", "--store", store,
                                                                    "-f", "tsv").stdout)}
    shown = json.loads(run_cli("store", "show", "Known1", "--store", store, "-f", "json").stdout)
    expected = {"cell": "Known1", "genes": 7, "genes_none": 1, "genes_train": 3, "genes_valid": 2, "genes_test": 1,
                "bins": 4, "bin_size": 50, "window": 100, "tss_offset": 100, "marks": "H3K4me3,H3K27me3",
                "counts_dtype": "int32", "positive_fraction": 4 / 7, "expression": False,
                "source_format": "deepchrome", "label_rule": "labels as given"}
    assert {key: shown[key] for key in expected} == expected
    assert shown["sources"] == [{"path": "/data/a.csv", "sha256": "a" * 64}, {"path": "/data/b.csv", "sha256": "b" * 64}]
    # The TSV's fields, in its order, with its values; only its numbered source fields are JSON's list.
    numbered = {"source_1": "/data/a.csv", "source_1_sha256": "a" * 64,
                "source_2": "/data/b.csv", "source_2_sha256": "b" * 64}
    assert {key: tsv[key] for key in numbered} == numbered
    assert [key for key in tsv if key not in numbered] == [key for key in shown if key != "sources"]
    assert tsv["genes_train"] == "3" and tsv["expression"] == "false"
    assert tsv["positive_fraction"] == repr(4 / 7)
    for key in ("created", "fingerprint", "encoding_version", "stored_bytes"):
        assert tsv[key] == str(shown[key])


def test_store_list_json_rows_are_the_tsv_rows(tmp_path):
    store = tmp_path / "s.h5"
    Store(store).write([known_cell()])
    (tsv,) = parse_tsv(run_cli("store", "list", "--store", store, "-f", "tsv").stdout)
    (listed,) = json.loads(run_cli("store", "list", "--store", store, "-f", "json").stdout)
    assert list(listed) == list(tsv)
    assert listed == {"cell": "Known1", "genes": 7, "train": 3, "valid": 2, "test": 1, "unsplit": 1, "bins": 4,
                      "bin_size": 50, "marks": "H3K4me3,H3K27me3", "positive_fraction": 4 / 7}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """One simulated cell of 60 genes x 4 bins."""
    folder = tmp_path_factory.mktemp("consistency")
    env = {"HISTCLI_STORE": str(folder / "s.h5"), "HISTCLI_MODELS": str(folder / "models")}
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 60, "--bins", 4, "-q", env=env).code == 0
    return env


def train(env: dict, *args, fmt: str = "json"):
    device = () if "--device" in args else ("--device", "cpu")
    result = run_cli("train", "--cell", "sim01", "--epochs", 1, "--threads", 1, *device, "-q", "-f", fmt,
                     *args, env=env)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout) if fmt == "json" else parse_tsv(result.stdout)


def test_seeds_are_a_list_in_json_and_short_text_in_tsv(tiny, tmp_path):
    env = {**tiny, "HISTCLI_MODELS": str(tmp_path / "models")}
    (single,) = train(env, "--arch", "logistic", "--name", "single", "--seed", 7)
    (ensemble,) = train(env, "--arch", "logistic", "--name", "trio", "--seeds", "0-2")
    (pair,) = train(env, "--arch", "logistic", "--name", "pair", "--seeds", "5,2", fmt="tsv")
    assert single["seeds"] == [7] and ensemble["seeds"] == [0, 1, 2]
    assert "seed" not in single and "seed" not in ensemble
    assert pair["seed"] == "5,2"

    listed = {row["model"]: row for row in json.loads(run_cli("models", "list", "-f", "json", env=env).stdout)}
    assert {name: row["seeds"] for name, row in listed.items()} == {"single": [7], "trio": [0, 1, 2], "pair": [5, 2]}
    tsv = parse_tsv(run_cli("models", "list", "-f", "tsv", env=env).stdout)
    assert {row["model"]: row["seed"] for row in tsv} == {"single": "7", "trio": "0-2", "pair": "5,2"}
    # The JSON keys are the TSV columns, seed (text) being seeds (a list).
    header = ["seeds" if key == "seed" else key for key in tsv[0]]
    assert all(list(row) == header for row in listed.values())


def test_fixed_names_take_any_case_and_are_recorded_in_lower_case(tiny, tmp_path):
    env = {**tiny, "HISTCLI_MODELS": str(tmp_path / "models")}
    (row,) = train(env, "--arch", "LOGISTIC")
    assert (row["model"], row["arch"]) == ("logistic", "logistic")  # the default name is the canonical one
    config = json.loads((tmp_path / "models" / "logistic" / "sim01" / "config.json").read_text())
    assert config["architecture"] == "logistic"
    (mixed,) = train(env, "--arch", "Logistic", "--name", "Mixed", "--task", "CLASSIFICATION", "--device", "CPU")
    assert (mixed["model"], mixed["arch"]) == ("Mixed", "logistic")  # the model's name keeps its case

    def evaluate(*args):
        result = run_cli("evaluate", "logistic", "-f", "json", "-q", *args, env=env)
        assert result.code == 0, result.stderr
        return json.loads(result.stdout)["rows"]

    (upper,), (lower,) = evaluate("--split", "TEST"), evaluate("--split", "test")
    assert upper == lower and upper["split"] == "test"
    compared = run_cli("compare", "logistic", "Mixed", "--metric", "AUC", "--split", "Test", "-f", "json", "-q",
                       env=env)
    assert compared.code == 0, compared.stderr
    payload = json.loads(compared.stdout)
    assert payload["metric"] == "auc" and payload["summary"]["n_cells"] == 1
    # Past the choice: --aggregate MEAN is taken, and the missing track file is what fails.
    tracks = run_cli("prepare", "tracks", "--cell", "X", "--track", f"H3K4me3={tmp_path / 'none.bedGraph'}",
                     "--genes", tmp_path / "none.bed", "--bin-size", 10, "--window", 100, "--aggregate", "MEAN",
                     env=env)
    assert tracks.code == 1 and "--aggregate" not in tracks.stderr and "none." in tracks.stderr
    # Cell and model names are data: another case is another name.
    assert run_cli("evaluate", "LOGISTIC", "-q", env=env).code == 1
    assert run_cli("evaluate", "logistic", "--cell", "SIM01", "-q", env=env).code == 1


@pytest.mark.parametrize("args, command", [
    (["store", "show", "--bogus"], "store show"),
    (["store", "show", "a", "b"], "store show"),
    (["store", "show", "a", "--store"], "store show"),
    (["store", "upgrade", "--quiet=yes"], "store upgrade"),
    (["models", "rm"], "models rm"),
    (["models", "rm", "a", "--cell"], "models rm"),
    (["models", "list", "--name"], "models list"),
    (["train", "--cell", "c", "--arch", "logistic", "--epochs", "x"], "train"),
    (["train", "--cell"], "train"),
    (["evaluate", "m", "-f", "xml"], "evaluate"),
    (["prepare", "simulate", "--cells", "x"], "prepare simulate"),
    (["prepare", "bogus"], "prepare"),
    (["--version=2"], ""),
    # histcli's own usage errors, found as the command runs
    (["compare", "onlyone"], "compare"),
    (["train", "--cell", "c", "--arch", "logistic", "--seed", "1", "--seeds", "0-2"], "train"),
    (["prepare", "tracks", "--cell", "X", "--track", "nofile", "--genes", "g.bed", "--bin-size", "10",
      "--window", "100"], "prepare tracks"),
])
def test_every_usage_error_says_where_the_commands_help_is(args, command, tmp_path):
    result = run_cli(*args, cwd=tmp_path, env={"HISTCLI_STORE": str(tmp_path / "s.h5"),
                                                "HISTCLI_MODELS": str(tmp_path / "m")})
    assert result.code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("histcli: error: ")
    assert line.endswith(f" (see '{' '.join(['histcli', command]).strip()} -h')"), line


def _every_command():
    """(command path, click command) of every histcli command, sub-commands included."""
    import typer.main

    from histcli.cli.app import app

    def walk(command, path):
        children = getattr(command, "commands", None)
        if children is None:
            yield path, command
            return
        for name, child in children.items():
            yield from walk(child, f"{path} {name}")

    return list(walk(typer.main.get_command(app), "histcli"))


def test_every_one_value_option_of_every_command_is_refused_twice():
    """click keeps the last of two values of a one-value option; every command refuses the second instead
    (a usage error naming the option), while options declared to repeat still take several."""
    from histcli.cli.main import click_exceptions

    usage_error = click_exceptions().UsageError
    checked = repeatable = 0
    for path, command in _every_command():
        for param in command.params:
            if param.param_type_name != "option" or param.name == "help" or param.is_eager:
                continue
            option = max(param.opts, key=len)
            once = [option] if param.is_flag else [option, "1"]
            if param.multiple:
                command.make_context(path, [*once, *once], resilient_parsing=True)  # parsed without complaint
                assert "repeat" in param.help, (path, option)  # the README says the help says so
                repeatable += 1
                continue
            with pytest.raises(usage_error, match=f"^{'/'.join([option, *param.secondary_opts])} given twice; "):
                command.make_context(path, [*once, *once])
            checked += 1
    assert checked > 100 and repeatable >= 8, (checked, repeatable)


def test_every_option_and_argument_of_every_command_refuses_an_empty_value():
    """`--name "$unset"` is a usage error naming the option, not the default name (or, for a folder, the
    current one); the same for arguments and for options that repeat."""
    from histcli.cli.main import click_exceptions

    usage_error = click_exceptions().UsageError
    checked = 0
    for path, command in _every_command():
        for param in command.params:
            if param.name == "help" or param.is_eager or getattr(param, "is_flag", False) or \
                    getattr(param, "count", False):
                continue
            if param.param_type_name == "option":
                args, shown = [max(param.opts, key=len), ""], "/".join([max(param.opts, key=len),
                                                                         *param.secondary_opts])
            else:
                args, shown = [""], f"argument {param.human_readable_name}"
            with pytest.raises(usage_error, match=f"^{shown} is empty \\(an unset shell variable\\?\\); give a value"):
                command.make_context(path, args)
            checked += 1
    assert checked > 100, checked


def test_help_is_shown_whatever_else_the_command_line_holds():
    for args in (("--name", ""), ("--arch", "cnn", "--arch", "crnn")):
        result = run_cli("train", *args, "--help")
        assert result.code == 0 and result.stdout.startswith("Usage: histcli train"), result.stderr


def test_an_empty_name_does_not_replace_the_entry_named_after_the_architecture(tmp_path):
    """`train --name '' --overwrite` (an unset variable in a loop) trained and saved under the default name,
    the architecture's, replacing the classifier stored there by a regressor."""
    store, models = tmp_path / "s.h5", tmp_path / "models"
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 60, "--bins", 4, "--store", store, "-q").code == 0
    common = ("--cell", "sim01", "--arch", "logistic", "--epochs", 2, "--store", store, "--models", models, "-q")
    assert run_cli("train", *common).code == 0
    stored = Registry(models).get("logistic", "sim01").metadata["weights_sha256"]
    result = run_cli("train", *common, "--task", "regression", "--name", "", "--overwrite")
    assert result.code == 2 and result.stdout == ""
    assert result.stderr == ("histcli: error: --name is empty (an unset shell variable?); give a value or leave "
                             "the option out (see 'histcli train -h')\n")
    entry = Registry(models).get("logistic", "sim01")
    assert entry.metadata["weights_sha256"] == stored and entry.config["task"]["name"] == "classification"


def test_a_one_value_option_given_twice_fails_before_anything_runs(tmp_path):
    """`train --arch cnn --arch crnn` trained a CRNN alone, silently; now it is one usage error and no model."""
    store = tmp_path / "s.h5"
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 60, "--bins", 4, "--store", store, "-q").code == 0
    models = tmp_path / "models"
    result = run_cli("train", "--cell", "sim01", "--arch", "cnn", "--arch", "crnn", "--epochs", 1,
                     "--store", store, "--models", models)
    assert result.code == 2 and result.stdout == ""
    assert result.stderr == "histcli: error: --arch given twice; it takes one value (see 'histcli train -h')\n"
    assert not models.exists()
    repeated = run_cli("store", "list", "--store", store, "-f", "tsv", "--format", "json")
    assert repeated.code == 2 and "--format given twice" in repeated.stderr
