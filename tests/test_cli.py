"""The shell experience: completions, start-up imports, exit codes, pipes and plain output."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, assert_one_line_error, parse_tsv, run_cli

from histcli.store import Store

BOX_DRAWING = re.compile("[\u2500-\u257f]")


def _complete_env(**extra) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("HISTCLI_STORE", "HISTCLI_MODELS")}
    return {**env, **extra}


@pytest.mark.parametrize("shell, file", [("bash", "histcli.bash"), ("zsh", "_histcli"), ("fish", "histcli.fish")])
def test_completion_scripts_are_up_to_date(shell, file):
    generated = subprocess.run([sys.executable, "-m", "histcli"], env=_complete_env(_HISTCLI_COMPLETE=f"source_{shell}"),
                               capture_output=True, text=True)
    # The scripts name the program, not the module the test runs.
    expected = (REPO / "completions" / file).read_text()
    assert generated.stdout.replace("__main__.py", "histcli") == expected, (
        f"completions/{file} is out of date: regenerate it with "
        f"_HISTCLI_COMPLETE=source_{shell} histcli > completions/{file}")


def _complete(words: str, env: dict) -> subprocess.CompletedProcess:
    """Ask the program for bash completions of the last word of ``words``."""
    return subprocess.run(
        ["histcli"], env=_complete_env(COMP_WORDS=words, COMP_CWORD=str(len(words.split(" ")) - 1),
                                       _HISTCLI_COMPLETE="complete_bash", **env),
        capture_output=True, text=True, timeout=60,
    )


def test_completion_offers_cells_models_and_architectures(workspace):
    env = {"HISTCLI_STORE": str(workspace.store), "HISTCLI_MODELS": str(workspace.models)}
    cells = _complete("histcli train --cell ", env)
    assert cells.stdout.split() == ["sim01", "sim02", "sim03"] and cells.stderr == ""
    partial = _complete("histcli store show sim0", env)
    assert partial.stdout.split() == ["sim01", "sim02", "sim03"]
    models = _complete("histcli evaluate ", env)
    assert models.stdout.split() == ["deepchrome", "logistic"] and models.stderr == ""
    archs = _complete("histcli train --arch ", {})
    assert archs.stdout.split() == ["attentivechrome", "cnn", "crnn", "deepchrome", "logistic", "rnn"]
    # The --store given on the command line wins over the environment.
    other = workspace.folder / "other.h5"
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 5, "--prefix", "x",
                   "--store", other, "-q").code == 0
    chosen = _complete(f"histcli train --store {other} --cell ", env)
    assert chosen.stdout.split() == ["x01"]
    # No store at all: nothing offered, nothing printed.
    missing = _complete("histcli train --cell ", {"HISTCLI_STORE": str(workspace.folder / "none.h5")})
    assert missing.stdout.split() == [] and missing.stderr == ""


def _imported_modules(*args, env=None) -> set[str]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "histcli", *args],
                            env=_complete_env(**(env or {})), capture_output=True, text=True, timeout=60)
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert names, result.stderr
    return names


@pytest.mark.parametrize("args, env", [
    (("--help",), {}),
    (("predict", "--help"), {}),
    (("train", "--help"), {}),
    ((), {"COMP_WORDS": "histcli train --arch ", "COMP_CWORD": "3", "_HISTCLI_COMPLETE": "complete_bash"}),
    ((), {"COMP_WORDS": "histcli evaluate ", "COMP_CWORD": "2", "_HISTCLI_COMPLETE": "complete_bash"}),
])
def test_help_and_completion_do_not_import_heavy_packages(args, env):
    imported = _imported_modules(*args, env=env)
    assert not imported & {"torch", "scipy", "pandas", "matplotlib"}, imported & {"torch", "scipy", "pandas"}


@pytest.mark.parametrize("group", [(), ("prepare",), ("store",), ("models",)])
def test_command_lists_cut_no_summary_at_80_columns(group):
    """Click shortens a summary that does not fit with '...': every command lists a whole one-line summary."""
    result = subprocess.run([sys.executable, "-m", "histcli", *group, "--help"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("Commands:\n", 1)[1].splitlines()
    expected = {(): 12, ("prepare",): 4, ("store",): 4, ("models",): 3}[group]
    assert len(listed) == expected and all(len(line) <= 80 for line in listed), listed
    for line in listed:
        name, summary = line.split(maxsplit=1)
        assert not summary.endswith("...") and summary.endswith("."), line


@pytest.mark.parametrize("preset, expected", [(None, "1000"), ("42", "42")])
def test_openmp_threads_spin_briefly_unless_the_user_chose(preset, expected):
    """Side by side (xargs -P 2), two trainings with libgomp's long default spin took 48 s each instead of
    1.4 s (bench/bench_threads.py): the entry point sets a short spin, before anything imports torch, and
    keeps a value the user set."""
    code = ("import os, sys\nsys.argv = ['histcli', '--version']\nimport histcli.cli.main as entry\n"
            "entry.exit_skipping_teardown = lambda code: print(os.environ.get('GOMP_SPINCOUNT'), "
            "'torch' in sys.modules)\nentry.main()")
    env = {key: value for key, value in os.environ.items() if key != "GOMP_SPINCOUNT"}
    if preset is not None:
        env["GOMP_SPINCOUNT"] = preset
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"{expected} False"


def test_exit_codes(tmp_path):
    store = tmp_path / "s.h5"
    ok = run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 5, "--store", store, "-q")
    assert ok.code == 0
    assert_one_line_error(run_cli("store", "list", "--store", tmp_path / "none.h5"), "does not exist", code=1)
    bad_usage = run_cli("store", "list", "--no-such-option")
    assert bad_usage.code == 2 and "Traceback" not in bad_usage.stderr
    bad_value = run_cli("prepare", "simulate", "--cells", "many")
    assert bad_value.code == 2 and "Traceback" not in bad_value.stderr
    assert run_cli("--version").stdout.startswith("histcli ")


def test_interrupted_prepare_exits_130_and_keeps_the_store(tmp_path):
    store = tmp_path / "s.h5"
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 5, "--store", store, "-q").code == 0
    before = Store(store).fingerprint("sim01")
    process = subprocess.Popen([sys.executable, "-m", "histcli", "prepare", "simulate", "--cells", "4",
                                "--genes", "20000", "--bins", "100", "--prefix", "big", "--store", str(store), "-q"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert Store(store).cell_names() == ["sim01"]
    assert Store(store).fingerprint("sim01") == before


def test_closed_pipe_ends_quietly(workspace):
    # Tens of thousands of lines, so that the writer meets the closed pipe.
    script = (f"set -o pipefail; {sys.executable} -m histcli predict logistic --cell sim01 --from-store sim01 "
              "--split all -q | head -1; echo \"status=${PIPESTATUS[0]}\"")
    big = workspace.folder / "big.h5"
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 60000, "--bins", 20, "--prefix", "sim",
                   "--store", big, "-q").code == 0
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HISTCLI_STORE": str(big), "HISTCLI_MODELS": str(workspace.models)})
    lines = result.stdout.splitlines()
    assert lines[0] == "gene_id\tprobability\tprediction"
    assert lines[-1] in ("status=141", "status=0")
    assert result.stderr == "", result.stderr


def test_commands_that_load_torch_skip_the_interpreter_teardown(workspace):
    """Once a command has flushed its output, torch's slow teardown is skipped; nothing is lost."""
    probe = ("import atexit, sys; atexit.register(lambda: print('teardown ran', file=sys.stderr)); "
             "from histcli.cli.main import main; main()")
    env = {**os.environ, "HISTCLI_STORE": str(workspace.store), "HISTCLI_MODELS": str(workspace.models)}

    def run(*args):
        return subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env,
                              timeout=300)

    # Cached predictions spare evaluate torch; without them it loads it (other tests may have filled the cache).
    for cache in Path(workspace.models, "logistic").glob("*/predictions"):
        shutil.rmtree(cache)
    evaluated = run("evaluate", "logistic", "-f", "tsv")
    assert evaluated.returncode == 0 and "teardown ran" not in evaluated.stderr
    assert [row["cell"] for row in parse_tsv(evaluated.stdout)] == ["sim01", "sim02", "sim03"]
    assert parse_tsv(evaluated.stdout) == parse_tsv(workspace.run("evaluate", "logistic", "-f", "tsv").stdout)
    table = workspace.folder / "bad.tsv"
    table.write_text("gene_id\tbin\tH3K4me3\nG1\t1\tmany\n")
    failed = run("predict", "logistic", "--cell", "sim01", str(table))
    assert failed.returncode == 1 and failed.stdout == "" and "teardown ran" not in failed.stderr
    assert failed.stderr.splitlines()[0].startswith("histcli: error: ")
    # Without torch loaded the interpreter ends normally.
    listed = run("store", "list", "-f", "tsv")
    assert listed.returncode == 0 and "teardown ran" in listed.stderr
    assert [row["cell"] for row in parse_tsv(listed.stdout)] == ["sim01", "sim02", "sim03"]


def test_machine_output_has_no_colour_or_box_drawing(workspace):
    for args in (("store", "list", "-f", "table"), ("models", "list", "-f", "table"),
                 ("evaluate", "logistic", "-f", "table"), ("compare", "logistic", "deepchrome", "-f", "table"),
                 ("store", "show", "sim01", "-f", "table"), ("--help",), ("evaluate", "--help")):
        result = workspace.run(*args)
        assert result.code == 0, (args, result.stderr)
        assert "\x1b[" not in result.stdout, args
        assert not BOX_DRAWING.search(result.stdout), (args, result.stdout[:400])
        if "--help" not in args:  # rich pads each cell to its column's width, the last column's too
            assert not [line for line in result.stdout.splitlines() if line != line.rstrip()], args


def test_tsv_output_parses_with_cut_and_awk(workspace):
    env = {**os.environ, "HISTCLI_STORE": str(workspace.store), "HISTCLI_MODELS": str(workspace.models)}
    def run(script: str) -> str:
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300).stdout

    histcli = f"{sys.executable} -m histcli"
    assert run(f"{histcli} store list | cut -f1 | tail -n +2").split() == ["sim01", "sim02", "sim03"]
    genes = run(f"{histcli} store list | awk -F'\\t' 'NR>1 {{s += $2}} END {{print s}}'")
    assert genes.strip() == "2700"
    header = run(f"{histcli} evaluate logistic deepchrome | head -1").rstrip("\n").split("\t")
    assert header[:3] == ["model", "cell", "trained_on"] and {"n", "auc", "auprc", "accuracy"} <= set(header)
    aucs = run(f"{histcli} evaluate logistic | awk -F'\\t' 'NR==1 {{for (i=1;i<=NF;i++) if ($i==\"auc\") c=i}} "
               f"NR>1 {{print $c}}'").split()
    assert len(aucs) == 3 and all(0.5 < float(a) <= 1 for a in aucs)
    rows = parse_tsv(run(f"{histcli} compare logistic deepchrome"))
    assert [r["cell"] for r in rows] == ["sim01", "sim02", "sim03"]


def test_progress_bar_on_a_terminal_only(tmp_path):
    """A terminal's stderr shows the rich progress bar; stdout stays machine-readable."""
    import pty

    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "histcli", "prepare", "simulate", "--cells", "2", "--genes", "300", "--bins", "10",
         "--store", str(tmp_path / "s.h5"), "-f", "tsv"],
        stdout=subprocess.PIPE, stderr=secondary, env={**os.environ, "COLUMNS": "120"},
    )
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    stdout = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 0
    assert "simulating cells" in output.decode(errors="replace")
    assert "2/2" in output.decode(errors="replace")
    assert stdout.splitlines()[0].startswith("cell\tgenes\t")
    assert "\x1b[" not in stdout


def test_progress_lines_in_a_log_at_the_interval_asked_for(workspace, tmp_path):
    """In a log, a long task writes a plain line now and then (HISTCLI_PROGRESS_SECONDS): with an interval
    shorter than an epoch, one line per epoch whose loss is the one the entry's history records; by default
    (60 s) a short command writes none, 0 turns them off, and a bad value is refused before any training."""
    from histcli.registry import Registry

    models = tmp_path / "models"
    train = ("train", "--cell", "sim01", "--arch", "logistic", "--epochs", 5, "--no-refit", "--threads", 1,
             "--models", models, "--overwrite", "-f", "tsv")
    result = workspace.run(*train, env_extra={"HISTCLI_PROGRESS_SECONDS": "0.000001"})
    assert result.code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("histcli: progress: ")]
    history = Registry(models).get("logistic", "sim01").metadata["history"]
    expected = [f"histcli: progress: logistic sim01 {record['epoch']}/5 loss {record['loss']:.4f} AUC "
                f"{record['valid_auc']:.4f} " for record in history]
    assert len(lines) == len(expected) == 5
    assert all(line.startswith(prefix) and re.search(r" \d+:\d\d:\d\d$", line)
               for line, prefix in zip(lines, expected, strict=True))
    for env in ({}, {"HISTCLI_PROGRESS_SECONDS": "0"}):
        result = workspace.run(*train, env_extra=env)
        assert result.code == 0 and "progress" not in result.stderr, result.stderr
    result = workspace.run(*train, env_extra={"HISTCLI_PROGRESS_SECONDS": "soon"})
    assert_one_line_error(result, "HISTCLI_PROGRESS_SECONDS='soon'", "0 or more", code=2)
    assert "see 'histcli" not in result.stderr  # no option of train's help sets it


def test_models_list_json_has_the_tsv_columns_and_models_show_tsv_full_precision(workspace, tmp_path):
    """JSON rows carry the same keys as the TSV header (no text made for people; the seed column is JSON's
    list of seeds), and `models show`'s TSV history holds each epoch's metric at full precision, as
    metadata.json does."""
    header = workspace.run("models", "list", "-f", "tsv").stdout.splitlines()[0].split("\t")
    listed = json.loads(workspace.run("models", "list", "-f", "json").stdout)
    assert listed and all(list(row) == ["seeds" if key == "seed" else key for key in header] for row in listed)
    assert isinstance(listed[0]["valid_auc"], float)
    # A single model's seeds are a list of one, as in train's JSON (an ensemble's: one per member).
    models = ("--models", tmp_path / "models")
    trained = json.loads(workspace.run("train", "--cell", "sim01", "--arch", "logistic", "--epochs", 1, "--seed", 7,
                                       *models, "-q", "-f", "json").stdout)
    (entry,) = json.loads(workspace.run("models", "list", *models, "-f", "json").stdout)
    assert entry["seeds"] == trained[0]["seeds"] == [7]
    fields = {row["field"]: row["value"] for row in parse_tsv(workspace.run(
        "models", "show", "logistic", "--cell", "sim01", "-f", "tsv").stdout)}
    history = json.loads((workspace.models / "logistic" / "sim01" / "metadata.json").read_text())["history"]
    assert fields["history"] == " ".join(f"{h['epoch']}:{h['valid_auc']!r}" for h in history)


def test_models_show_is_one_table_at_80_columns(workspace, monkeypatch, capsys):
    """Long values (weights SHA-256, versions, the history) fold in the value column: one line per field."""
    import io

    from rich.console import Console

    from histcli import output
    from histcli.cli.models_cmd import show_model
    from histcli.cli.options import OutputFormat

    buffer = io.StringIO()
    monkeypatch.setattr(output, "console", lambda stderr=False: Console(file=buffer, width=80, no_color=True))
    monkeypatch.setattr(output, "stdout_is_terminal", lambda: True)
    show_model("logistic", "sim01", models_path=workspace.models, output_format=OutputFormat.table)
    text = buffer.getvalue()
    assert "(1 of" not in text and "…" not in text and max(map(len, text.splitlines())) <= 80
    assert text.splitlines()[0].strip() == "logistic for sim01"
    metadata = json.loads((workspace.models / "logistic" / "sim01" / "metadata.json").read_text())
    assert metadata["weights_sha256"] in "".join(text.split())
    assert ["training.seed", "0"] in [line.split() for line in text.splitlines()]


def test_notes_count_one_gene_as_one_gene(tiny_model):
    """'predicted 1 genes', 'explained 1 genes': the notes now count with output.counted."""
    marks = ["H3K4me3", "H3K4me1", "H3K36me3", "H3K9me3", "H3K27me3"]
    one_gene = "gene_id\tbin\t" + "\t".join(marks) + "\n" + "".join(f"G1\t{b}\t1\t2\t3\t4\t5\n" for b in range(1, 5))
    predicted = run_cli("predict", "logistic", "--cell", "sim01", "--input", "-", stdin=one_gene, env=tiny_model)
    assert predicted.code == 0, predicted.stderr
    assert "histcli: note: predicted 1 gene with logistic (sim01)\n" in predicted.stderr
    pytest.importorskip("captum", reason="the explain extra is not installed (pip install 'histcli[explain]')")
    explained = run_cli("explain", "logistic", "--cell", "sim01", "--genes", "-", "--method", "saliency",
                        stdin="SIMG0000001\n", env=tiny_model)
    assert explained.code == 0, explained.stderr
    assert "histcli: note: explained 1 gene of sim01 with logistic (sim01), saliency" in explained.stderr


@pytest.mark.parametrize("command", [["evaluate", "logistic"], ["predict", "logistic", "--cell", "sim01",
                                                                   "--from-store", "sim01"]])
def test_a_nan_threshold_is_bad_usage(tiny_model, command):
    """click's range check lets nan through (every comparison with it is false): evaluate scored an accuracy
    with every gene called 0 and predict wrote 0 for every gene, exit 0."""
    result = run_cli(*command, "--threshold", "nan", env=tiny_model)
    assert_one_line_error(result, "--threshold nan: expected a probability from 0 to 1", code=2)
    assert result.stdout == ""


def test_a_piped_table_fits_the_width_columns_asks_for(workspace):
    """`COLUMNS=80 histcli ... -f table | less` folds as an 80-column terminal does, cutting no value; without
    COLUMNS a piped table keeps a value on one line (up to 200 columns)."""
    show = ("models", "show", "logistic", "--cell", "sim01", "-f", "table")
    digest = parse_tsv(workspace.run(*show[:-1], "tsv").stdout)
    digest = {row["field"]: row["value"] for row in digest}["weights_sha256"]
    narrow = workspace.run(*show, env_extra={"COLUMNS": "80"})
    assert narrow.code == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    at = next(i for i, line in enumerate(lines) if line.startswith("weights_sha256"))
    value_column = lines[at].index(digest[:8])
    assert "".join(line[value_column:].strip() for line in lines[at:at + 2]) == digest  # folded, not cut
    for unset in ("", "0"):  # COLUMNS=0 (set so by some environments) is no width: the table is not emptied
        wide = workspace.run(*show, env_extra={"COLUMNS": unset})
        assert any(line.split() == ["weights_sha256", digest] for line in wide.stdout.splitlines()), unset
