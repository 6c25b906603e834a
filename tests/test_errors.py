"""The command line's one error map: library exceptions carry facts and plain messages;
``describe`` words them for users, with the option that changes the outcome."""

from __future__ import annotations

import errno
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, run_cli

from histcli.errors import (
    EXIT_ERROR,
    EXIT_USAGE,
    CellExistsError,
    ChangedDataError,
    ChoiceError,
    ConflictError,
    EmptySplitError,
    HistcliError,
    HyperparameterError,
    MissingGenesError,
    ModelExistsError,
    SettingError,
    UnlabelledCellError,
    describe,
)


@pytest.mark.parametrize("exc, library, shown", [
    (CellExistsError("s.h5", "E003"), "s.h5: cell 'E003' already exists",
     "s.h5: cell 'E003' already exists; pass --overwrite to replace it"),
    (ModelExistsError("models", "crnn", "E003"), "model 'crnn' for cell 'E003' already exists in models",
     "model 'crnn' for cell 'E003' already exists in models; pass --overwrite to replace it"),
    (ModelExistsError("models", "crnn", "E003", differs=("training",)),
     "model 'crnn' for cell 'E003' already exists in models with other settings (training)",
     "model 'crnn' for cell 'E003' already exists in models with other settings (training); "
     "pass --overwrite to replace it"),
    (MissingGenesError("e.tsv", "3 of 600 genes have no expression value", missing=3, total=600),
     "e.tsv: 3 of 600 genes have no expression value",
     "e.tsv: 3 of 600 genes have no expression value; pass --drop-missing to leave them out"),
    (ChangedDataError("s.h5", "E003", "crnn", trained="a" * 64, current="b" * 64),
     "cell E003 in s.h5 changed since model 'crnn' was trained on it (fingerprint aaaaaaaaaaaa then, "
     "bbbbbbbbbbbb now)",
     "cell E003 in s.h5 changed since model 'crnn' was trained on it (fingerprint aaaaaaaaaaaa then, "
     "bbbbbbbbbbbb now); retrain it, or pass --allow-changed-data to evaluate anyway"),
    (UnlabelledCellError("E003"), "cell E003 has no labels (prepared without expression)",
     "cell E003 has no labels (prepared without expression); "
     "use 'histcli predict --from-store' for predictions without evaluation"),
    (HyperparameterError("cnn: unknown hyperparameter(s) nope; valid hyperparameters: dense, dropout"),
     "cnn: unknown hyperparameter(s) nope; valid hyperparameters: dense, dropout",
     "--param: cnn: unknown hyperparameter(s) nope; valid hyperparameters: dense, dropout"),
    (EmptySplitError("E003", "valid", "explain"), "cell E003 has no valid genes to explain",
     "cell E003 has no valid genes to explain; choose another --split"),
    (EmptySplitError("E003", "none", "explain"), "cell E003 has no unsplit genes (split none) to explain",
     "cell E003 has no unsplit genes (split none) to explain; choose another --split"),
    (ChoiceError("split", "holdout", ("test", "all")), "split 'holdout': expected one of test, all",
     "--split 'holdout': expected one of test, all"),
    (ChoiceError("explain_method", "x", ("saliency",)), "explain_method 'x': expected one of saliency",
     "--explain-method 'x': expected one of saliency"),
    (SettingError("split_fractions", "0.5", "expected three fractions"), "split_fractions '0.5': expected three fractions",
     "--split-fractions '0.5': expected three fractions"),
    # A setting left out is "not given", not Python's None.
    (SettingError("cell", None, "name one cell"), "cell not given: name one cell", "--cell not given: name one cell"),
    (ConflictError(["split_file", "split_fractions"], "give at most one way to split"),
     "split_file and split_fractions cannot be combined: give at most one way to split",
     "--split-file and --split-fractions cannot be combined: give at most one way to split"),
])
def test_library_messages_are_plain_and_the_map_adds_the_option(exc, library, shown):
    assert str(exc) == library
    assert "--" not in library
    code = EXIT_USAGE if isinstance(exc, (SettingError, ConflictError, HyperparameterError)) else EXIT_ERROR
    assert describe(exc) == (shown, code)


def test_exceptions_carry_their_facts():
    exc = MissingGenesError("e.tsv", "problem", missing=3, total=600, example="ENSG1")
    assert (exc.path, exc.missing, exc.total, exc.example, exc.problem) == ("e.tsv", 3, 600, "ENSG1", "problem")
    changed = ChangedDataError("s.h5", "E003", "crnn", trained="t", current="c")
    assert (changed.store, changed.cell, changed.model, changed.trained, changed.current) == (
        "s.h5", "E003", "crnn", "t", "c")
    choice = ChoiceError("split", "x", ["a", "b"])
    assert (choice.setting, choice.value, choice.choices) == ("split", "x", ("a", "b"))


def test_plain_library_errors_pass_through_unchanged():
    assert describe(HistcliError("cell E1: no genes")) == ("cell E1: no genes", EXIT_ERROR)


def test_disk_full_read_only_and_permission_denied():
    full = OSError(errno.ENOSPC, "No space left on device", "/data/store.h5")
    assert describe(full) == ("/data/store.h5: no space left on device; free some space or write elsewhere", 1)
    # h5py reports a failed write with the errno only in its text.
    h5_full = OSError("Can't write data (file write failed: time = x, filename = 's.h5', "
                      "errno = 28, error message = 'No space left on device')")
    assert describe(h5_full)[0].endswith("no space left on device; free some space or write elsewhere")
    read_only = OSError(errno.EROFS, "Read-only file system", "/mnt/ro/models")
    assert describe(read_only) == ("/mnt/ro/models: read-only file system; write elsewhere", 1)
    denied = PermissionError(errno.EACCES, "Permission denied", "/data/out.tsv")
    assert describe(denied) == ("/data/out.tsv: permission denied", 1)
    assert describe(OSError(errno.EACCES, "Permission denied", "/x"))[0] == "/x: permission denied"


def test_out_of_memory_from_python_numpy_and_torch():
    import torch

    expected = ("out of memory; try a smaller --batch-size, or fewer cells or genes at a time", 1)
    assert describe(MemoryError()) == expected
    with pytest.raises(MemoryError) as numpy_oom:  # numpy's _ArrayMemoryError is a MemoryError
        np.empty(1 << 62, dtype=np.uint8)
    assert describe(numpy_oom.value) == expected
    assert describe(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")) == (
        "out of memory on the GPU; try a smaller --batch-size, or --device cpu", 1)
    assert describe(RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate "
                                 "memory: you tried to allocate 1099511627776 bytes")) == expected
    # Any other RuntimeError is a bug: re-raised with its traceback.
    assert describe(RuntimeError("shape mismatch")) == ("", -1)


@pytest.mark.parametrize("failure, fragments", [
    ("OSError(errno.ENOSPC, 'No space left on device', str(path))", ["no space left on device"]),
    ("OSError(errno.EROFS, 'Read-only file system', str(path))", ["read-only file system"]),
    ("MemoryError()", ["out of memory", "--batch-size"]),
])
def test_the_command_line_turns_failures_into_one_line(tmp_path, failure, fragments):
    """A failure deep inside the store's write, through histcli's real entry point."""
    store = tmp_path / "store.h5"
    script = (
        "import errno, sys\n"
        "import histcli.store as store_module\n"
        "def failing_write(self, *args, **kwargs):\n"
        "    path = self.path\n"
        f"    raise {failure}\n"
        "store_module.Store.write = failing_write\n"
        "from histcli.cli.main import main\n"
        f"sys.argv = ['histcli', 'prepare', 'simulate', '--cells', '1', '--genes', '30', '--bins', '4', "
        f"'--store', {str(store)!r}]\n"
        "main()\n"
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)

    class Result:
        code, stdout, stderr = process.returncode, process.stdout, process.stderr

    assert_one_line_error(Result, str(store) if "errno" in failure else "", *fragments)
    assert not store.exists()


def test_sweep_and_tune_settings_are_worded_with_their_options():
    from histcli.distributed import parse_grid
    from histcli.tuning import parse_search

    with pytest.raises(SettingError) as search:
        parse_search(["lr"])
    assert str(search.value).startswith("search 'lr': expected KEY=SPEC")
    assert describe(search.value)[0].startswith("--search 'lr': expected KEY=SPEC")
    with pytest.raises(SettingError) as grid:
        parse_grid(["units=8", "units=8"])
    assert describe(grid.value) == ("--param 'units=8': given twice", EXIT_USAGE)


def test_an_input_error_can_name_the_users_input_instead_of_its_copy():
    from histcli.errors import MissingGenesError

    error = MissingGenesError("/tmp/histcli-input-x/63", "3 of 10 genes lack expression", missing=3, total=10)
    renamed = error.naming("/dev/fd/63")
    assert type(renamed) is MissingGenesError and (renamed.missing, renamed.total) == (3, 10)
    assert str(renamed) == "/dev/fd/63: 3 of 10 genes lack expression"
    assert str(error) == "/tmp/histcli-input-x/63: 3 of 10 genes lack expression"  # the original is unchanged


def test_an_os_error_without_a_file_is_not_prefixed_by_its_own_text():
    # A failed write to stdout (e.g. into a full disk) carries no file name.
    assert describe(OSError(errno.ENOSPC, "No space left on device")) == (
        "no space left on device; free some space or write elsewhere", 1)
    assert describe(PermissionError(errno.EACCES, "Permission denied")) == ("permission denied", 1)


@pytest.mark.parametrize("args, said", [
    (["store", "list", "-f", "xml"],
     "Invalid value for '--format' / '-f': 'xml' is not one of 'auto', 'table', 'tsv', 'json' "
     "(see 'histcli store list -h')"),
    (["train", "--cel", "E003"],
     "No such option: --cel (Possible options: --cell, --help, --lr) (see 'histcli train -h')"),
    (["evalute", "crnn"], "No such command 'evalute'. Did you mean 'evaluate'? (see 'histcli -h')"),
    (["store", "show"], "Missing argument 'cell' (see 'histcli store show -h')"),
])
def test_bad_usage_that_click_finds_is_one_line_too(args, said):
    """Click's own usage errors (unknown option or command, invalid value, missing argument) were a usage
    line, a hint and an error block (a boxed panel on a terminal): now one line like histcli's own, exit 2."""
    result = run_cli(*args)
    assert result.code == EXIT_USAGE
    assert result.stderr == f"histcli: error: {said}\n"
    assert result.stdout == ""


def test_a_group_without_its_command_still_shows_its_help():
    result = run_cli("store")
    assert result.code == EXIT_USAGE
    assert result.stderr.startswith("Usage: histcli store [OPTIONS] COMMAND") and "upgrade" in result.stderr


@pytest.mark.parametrize("args", [
    ["compare", "crnn", "deepchrome"], ["report", "crnn", "deepchrome"], ["demo"], ["prepare", "simulate"],
    ["prepare", "tracks", "--cell", "X", "--track", "H3K4me3=t.bedGraph", "--genes", "g.bed", "--bin-size", "10",
     "--window", "100"],
    ["tune", "--cell", "X", "--arch", "logistic", "--search", "lr=loguniform:1e-3:1e-2"],
])
def test_a_negative_seed_is_bad_usage_not_a_traceback(args, tmp_path):
    """numpy's generators take no negative seed: these commands ended in a ValueError traceback (compare and
    report after scoring every cell); the option now says it, before any work."""
    result = run_cli(*args, "--seed", "-1", cwd=tmp_path,  # demo's folder, were it to run
                     env={"HISTCLI_STORE": str(tmp_path / "s.h5"), "HISTCLI_MODELS": str(tmp_path / "m")})
    assert_one_line_error(result, "Invalid value for '--seed': -1 is not in the range x>=0", code=EXIT_USAGE)
    assert len(result.stderr.splitlines()) == 1
