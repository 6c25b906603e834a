"""`histcli explain`: completeness, a known signal found by every method, layout, gene choice and errors."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, parse_tsv, run_cli

from histcli.explanation import bin_positions
from histcli.sources.simulate import split_codes
from histcli.store import CellData, Store

pytest.importorskip("captum")

MARKS = ("H3K4me3", "H3K4me1", "H3K36me3", "H3K9me3", "H3K27me3")
N_BINS, BIN_SIZE = 10, 100
SIGNAL_MARK, SIGNAL_BINS = "H3K36me3", (6, 7)  # bins 1-based, as the output numbers them
METHODS = ("integrated-gradients", "deeplift", "gradient-shap", "saliency", "occlusion")


def signal_cell(name: str = "signal", n_genes: int = 600, seed: int = 0) -> CellData:
    """Background counts everywhere; the label shows only in one mark over two bins."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n_genes).astype(np.int8)
    counts = rng.poisson(3.0, (n_genes, N_BINS, len(MARKS))).astype(np.int32)
    window = [b - 1 for b in SIGNAL_BINS]
    signal = rng.poisson(np.where(labels == 1, 12.0, 1.0)[:, None], (n_genes, len(window)))
    counts[:, window, MARKS.index(SIGNAL_MARK)] = signal
    return CellData(name=name, counts=counts, gene_ids=np.array([f"G{i:04d}" for i in range(n_genes)], dtype=object),
                    marks=MARKS, bin_size=BIN_SIZE, window=N_BINS * BIN_SIZE // 2, tss_offset=N_BINS * BIN_SIZE // 2,
                    split=split_codes(n_genes, rng), labels=labels, attrs={"source_format": "simulated"},
                    # A level for regression models, carried by the same window.
                    expression=signal.sum(axis=1).astype(np.float64))


class Space:
    def __init__(self, folder: Path):
        self.folder = folder
        self.env = {"HISTCLI_STORE": str(folder / "store.h5"), "HISTCLI_MODELS": str(folder / "models")}

    def run(self, *args, **kwargs):
        return run_cli(*args, env={**self.env, **kwargs.pop("env", {})}, **kwargs)

    def ok(self, *args, **kwargs):
        result = self.run(*args, **kwargs)
        assert result.code == 0, result.stderr
        return result


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Space:
    """The signal cell with a logistic model, small cnn models (plain, mirrored and a two-seed
    ensemble) and an attentivechrome."""
    space = Space(tmp_path_factory.mktemp("explain"))
    Store(space.folder / "store.h5").write([signal_cell()])
    space.ok("train", "--cell", "signal", "--arch", "logistic", "--epochs", 60, "--threads", 1, "--device", "cpu", "-q")
    # Not refit: attributions do not depend on how the weights were trained, and this keeps the fixture quick.
    common = ("--cell", "signal", "--arch", "cnn", "--epochs", 20, "--threads", 1, "--device", "cpu", "-q",
              "--param", "maps=8,8", "--param", "dense=16", "--param", "dropout=0", "--lr", 0.003, "--no-refit")
    space.ok("train", *common, "--name", "cnn", "--mirror", "off")
    space.ok("train", *common, "--name", "mirrored", "--mirror", "on")
    space.ok("train", *common, "--name", "ensemble", "--mirror", "off", "--seeds", "0-1")
    space.ok("train", *common, "--name", "regression-ensemble", "--mirror", "off", "--seeds", "0-1",
             "--task", "regression")
    space.ok("train", "--cell", "signal", "--arch", "attentivechrome", "--epochs", 15, "--threads", 1,
             "--device", "cpu", "-q")
    return space


def logits_from_predict(space: Space, name: str, *args, stdin: str | None = None) -> dict[str, float]:
    """The model's raw output per gene, from predict: the logit of the probability, or for a regression
    model the standardised level (level - target_mean) / target_scale."""
    from histcli.registry import Registry

    result = space.ok("predict", name, "--cell", "signal", *args, "-f", "json", "-q", stdin=stdin)
    rows = json.loads(result.stdout)
    if "probability" in rows[0]:
        return {row["gene_id"]: math.log(row["probability"] / (1 - row["probability"])) for row in rows}
    task = Registry(space.folder / "models").get(name, "signal").config["task"]
    return {row["gene_id"]: (row["log_expression"] - task["target_mean"]) / task["target_scale"] for row in rows}


def attribution_sums(rows: list[dict]) -> dict[str, float]:
    sums: dict[str, float] = {}
    for row in rows:
        sums[row["gene_id"]] = sums.get(row["gene_id"], 0.0) + float(row["attribution"])
    return sums


@pytest.mark.parametrize("name", ["cnn", "mirrored", "ensemble", "regression-ensemble"])
def test_attributions_sum_to_the_change_in_the_predicted_logit(space, name):
    # predict on a third of the test genes (to keep the test quick) and on an empty gene, the baseline
    cell = Store(space.folder / "store.h5").load("signal", splits=["test"])
    genes = list(cell.gene_ids[::3])
    lines = ["gene_id\tbin\t" + "\t".join(MARKS)]
    for gene, matrix in [*zip(genes, cell.counts[::3], strict=True), ("EMPTY", np.zeros_like(cell.counts[0]))]:
        lines += [f"{gene}\t{b}\t" + "\t".join(map(str, row)) for b, row in enumerate(matrix.tolist(), start=1)]
    logits = logits_from_predict(space, name, "-", stdin="\n".join(lines) + "\n")
    deltas = np.array([logits[gene] - logits["EMPTY"] for gene in genes])
    assert np.median(np.abs(deltas)) > 0.5  # the check means something
    for method in ("integrated-gradients", "deeplift"):
        result = space.ok("explain", name, "--cell", "signal", "--method", method, "--genes", "-", "--threads", 1,
                          "-f", "tsv", stdin="\n".join(genes) + "\n")
        sums = attribution_sums(parse_tsv(result.stdout))
        assert list(sums) == genes
        totals = np.array(list(sums.values()))
        np.testing.assert_array_less(np.abs(totals - deltas), 0.01 * np.abs(deltas) + 1e-4, err_msg=method)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_finds_the_mark_and_window_that_decide_the_label(space, method):
    result = space.ok("explain", "logistic", "--cell", "signal", "--method", method, "--summary", "-f", "json",
                      "--threads", 1)
    summary = json.loads(result.stdout)
    bins = [row for row in summary["bins"] if row["group"] == "all"]
    top = sorted(bins, key=lambda row: -row["mean_abs_attribution"])[:2]
    assert {(row["mark"], row["bin"]) for row in top} == {(SIGNAL_MARK, b) for b in SIGNAL_BINS}
    marks = {row["mark"]: row for row in summary["marks"] if row["group"] == "all"}
    assert marks[SIGNAL_MARK]["rank"] == 1
    assert sorted(row["rank"] for row in marks.values()) == [1, 2, 3, 4, 5]
    # The window's counts raise the label: genes labelled high get positive attributions there
    # (saliency is the gradient, the same for every gene of a linear model).
    high = {(row["mark"], row["bin"]): row for row in summary["bins"] if row["group"] == "high"}
    assert all(high[(SIGNAL_MARK, b)]["mean_attribution"] > 0 for b in SIGNAL_BINS)
    # Per-bin means and per-mark totals agree.
    signal_bins = [row["mean_attribution"] for row in bins if row["mark"] == SIGNAL_MARK]
    assert marks[SIGNAL_MARK]["total_attribution"] == pytest.approx(sum(signal_bins), rel=1e-9)


def test_attention_weights_pick_the_mark_that_decides_the_label(space):
    result = space.ok("explain", "attentivechrome", "--cell", "signal", "--method", "attention", "--summary",
                      "-f", "json", "--threads", 1)
    summary = json.loads(result.stdout)
    marks = {row["mark"]: row for row in summary["marks"] if row["group"] == "all"}
    assert marks[SIGNAL_MARK]["rank"] == 1
    # Weights are shares of the gene's summary: they sum to 1 over bins and marks.
    assert sum(row["total_attribution"] for row in marks.values()) == pytest.approx(1.0, abs=1e-5)
    # Bin-level attention over bidirectional LSTM states need not point at the window
    # (a state at any bin can carry the whole sequence), so only the mark is checked.
    rows = parse_tsv(space.ok("explain", "attentivechrome", "--cell", "signal", "--method", "attention",
                              "--genes", "-", "--threads", 1, stdin="G0001\n").stdout)
    assert list(rows[0])[-2:] == ["bin_attention", "mark_attention"]
    for mark in MARKS:
        weights = [float(r["bin_attention"]) for r in rows if r["mark"] == mark]
        assert sum(weights) == pytest.approx(1.0, abs=1e-5)
        assert len({r["mark_attention"] for r in rows if r["mark"] == mark}) == 1
    assert sum(float(r["attribution"]) for r in rows) == pytest.approx(1.0, abs=1e-5)


def test_summary_tsv_splits_by_label_and_matches_the_long_output(space):
    long_rows = parse_tsv(space.ok("explain", "logistic", "--cell", "signal", "--threads", 1).stdout)
    labels = dict(zip(*_cell_labels(space), strict=True))
    rows = parse_tsv(space.ok("explain", "logistic", "--cell", "signal", "--summary", "-f", "tsv",
                              "--threads", 1).stdout)
    assert list(rows[0]) == ["group", "mark", "bin", "position", "n_genes", "mean_attribution",
                             "mean_abs_attribution", "rank"]
    for group, wanted in (("all", (0, 1)), ("high", (1,)), ("low", (0,))):
        chosen = [float(r["attribution"]) for r in long_rows
                  if r["mark"] == "H3K4me3" and r["bin"] == "3" and labels[r["gene_id"]] in wanted]
        (row,) = [r for r in rows if r["group"] == group and r["mark"] == "H3K4me3" and r["bin"] == "3"]
        assert int(row["n_genes"]) == len(chosen)
        assert float(row["mean_attribution"]) == pytest.approx(np.mean(chosen), rel=1e-5, abs=1e-7)
        assert float(row["mean_abs_attribution"]) == pytest.approx(np.mean(np.abs(chosen)), rel=1e-5, abs=1e-7)
    assert {r["bin"] for r in rows if r["rank"] != "NA"} == {"all"}


def test_output_dash_is_stdout_not_a_file_named_dash(space, tmp_path):
    args = ("explain", "logistic", "--cell", "signal", "--method", "saliency", "--threads", 1)
    assert space.ok(*args, "-o", "-", "-q", cwd=tmp_path).stdout == space.ok(*args, "-q").stdout
    assert not (tmp_path / "-").exists()


def test_outputs_never_replace_the_store_the_model_the_gene_list_or_each_other(space, tmp_path):
    """-o and --plot were written over whatever they named: the store, a weights file, the --genes list, or
    each other. Each is a usage error before any work, and every file stays as it was."""
    store = space.folder / "store.h5"
    weights = space.folder / "models" / "logistic" / "signal" / "weights.safetensors"
    cell_file = next((space.folder / "store.h5.cells").iterdir())
    genes = tmp_path / "genes.txt"
    genes.write_text(parse_tsv(space.ok("explain", "logistic", "--cell", "signal", "--method", "saliency",
                                        "--threads", 1, "-q").stdout)[0]["gene_id"] + "\n")
    kept = {path: path.read_bytes() for path in (store, weights, cell_file, genes)}
    explain = ("explain", "logistic", "--cell", "signal", "--method", "saliency", "--threads", 1)
    for args, said in (
        (("-o", store), f"-o {store} is the input file {store}: the attributions would replace it"),
        (("-o", weights), f"-o {weights} is inside the model's folder {weights.parent}"),
        (("-o", cell_file), f"-o {cell_file} is inside the store's cell folder {cell_file.parent}"),
        (("--genes", genes, "-o", genes), f"-o {genes} is the input file {genes}"),
        (("--summary", "--plot", tmp_path / "same.png", "-o", tmp_path / "same.png"),
         f"--plot {tmp_path / 'same.png'} is also -o: the plot would replace the attributions"),
    ):
        result = space.run(*explain, *args)
        assert_one_line_error(result, said, code=2)
        assert result.stdout == ""
    assert all(path.read_bytes() == content for path, content in kept.items())
    assert not (tmp_path / "same.png").exists()


def test_plot_writes_a_heatmap(space, tmp_path):
    plot = tmp_path / "explain.png"
    result = space.ok("explain", "logistic", "--cell", "signal", "--method", "saliency", "--summary", "-f", "tsv",
                      "--plot", plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert parse_tsv(result.stdout)[0]["group"] == "all"
    assert [p.name for p in tmp_path.iterdir()] == ["explain.png"]  # no temporary file left
    wrong = space.run("explain", "logistic", "--cell", "signal", "--plot", tmp_path / "explain.gif")
    assert_one_line_error(wrong, "expected a .png, .svg or .pdf", code=2)


def _cell_labels(space: Space):
    cell = Store(space.folder / "store.h5").load("signal", splits=["test"])
    return cell.gene_ids, cell.labels


@pytest.mark.parametrize("n_bins, bin_size, tss_offset, expected", [
    (10, 100, 500, [-450, -350, -250, -150, -50, 50, 150, 250, 350, 450]),
    (20, 10000, 100000, list(range(-95000, 100000, 10000))),
    (4, 25, 50, [-37.5, -12.5, 12.5, 37.5]),
    (3, 1000, 0, [500, 1500, 2500]),  # a window that starts at the TSS
])
def test_bin_positions_are_centres_relative_to_the_tss(n_bins, bin_size, tss_offset, expected):
    assert bin_positions(n_bins, bin_size, tss_offset).tolist() == expected


def test_long_output_layout_and_values(space):
    rows = parse_tsv(space.ok("explain", "logistic", "--cell", "signal", "--split", "valid", "--threads", 1).stdout)
    assert list(rows[0]) == ["gene_id", "bin", "position", "mark", "value", "attribution"]
    cell = Store(space.folder / "store.h5").load("signal", splits=["valid"])
    assert len(rows) == cell.n_genes * N_BINS * len(MARKS)
    first = [r for r in rows if r["gene_id"] == cell.gene_ids[0]]
    assert [(r["bin"], r["mark"]) for r in first[:6]] == [("1", m) for m in MARKS] + [("2", MARKS[0])]
    assert [int(r["position"]) for r in first[:: len(MARKS)]] == list(range(-450, 500, 100))
    assert [int(r["value"]) for r in first] == cell.counts[0].ravel().tolist()


def test_genes_come_in_input_order_and_unknown_genes_are_named(space, tmp_path):
    chosen = ["G0007", "G0500", "G0001", "G0123"]  # from different splits
    genes = tmp_path / "genes.txt"
    genes.write_text("gene_id\n" + "\n".join(chosen) + "\n")
    rows = parse_tsv(space.ok("explain", "logistic", "--cell", "signal", "--genes", genes, "--threads", 1).stdout)
    assert list(dict.fromkeys(r["gene_id"] for r in rows)) == chosen
    from_stdin = space.ok("explain", "logistic", "--cell", "signal", "--genes", "-", "--threads", 1,
                          stdin="\n".join(chosen[::-1]) + "\n")
    assert list(dict.fromkeys(r["gene_id"] for r in parse_tsv(from_stdin.stdout))) == chosen[::-1]
    genes.write_text("G0007\nNOPE1\nG0001\nNOPE2\n")
    failed = space.run("explain", "logistic", "--cell", "signal", "--genes", genes)
    assert_one_line_error(failed, "2 of 4 gene(s) not in cell signal", "NOPE1, NOPE2")
    assert failed.stdout == ""
    cell = Store(space.folder / "store.h5").load("signal", splits=["train"])
    genes.write_text(f"{cell.gene_ids[0]}\n")
    outside = space.run("explain", "logistic", "--cell", "signal", "--genes", genes, "--split", "test")
    assert_one_line_error(outside, "not in cell signal (test genes)", cell.gene_ids[0])


def test_attention_needs_an_attention_model_and_captum_is_optional(space, tmp_path):
    wrong = space.run("explain", "logistic", "--cell", "signal", "--method", "attention")
    assert_one_line_error(wrong, "--method 'attention': needs a model with attention", "logistic", code=2)
    fake = tmp_path / "fake"
    (fake / "captum").mkdir(parents=True)
    (fake / "captum" / "__init__.py").write_text("raise ImportError('captum is not installed')\n")
    path = os.pathsep.join(filter(None, [str(fake), os.environ.get("PYTHONPATH")]))
    missing = space.run("explain", "logistic", "--cell", "signal", env={"PYTHONPATH": path})
    assert_one_line_error(missing, "pip install 'histcli[explain]'")
    assert missing.stdout == ""


def test_readme_examples_run(space, tmp_path):
    import re
    import subprocess
    import sys

    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = re.search(r"^### `histcli explain`.*?```bash\n(.*?)```", readme, flags=re.S | re.M).group(1)
    (tmp_path / "my_genes.txt").write_text("G0003\nG0001\n")
    env = {**os.environ, **space.env,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # Fewer integration points keep the test quick; the commands are the README's.
    script = "set -euo pipefail\n" + section.replace("--cell E116", "--cell signal --steps 8") + "\n"
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    per_mark = [line.split("\t") for line in result.stdout.splitlines() if "\tall\t" in line]
    # The first command's TSV and the awk filter's: the per-mark rows of all, high and low genes, twice.
    assert len(per_mark) == 2 * 3 * len(MARKS)
    assert (tmp_path / "explain.png").stat().st_size > 0
    assert list(dict.fromkeys(r["gene_id"] for r in parse_tsv((tmp_path / "attributions.tsv").read_text()))) == [
        "G0003", "G0001"]
    assert {row["mark"] for row in json.loads((tmp_path / "attention.json").read_text())["marks"]} == set(MARKS)


def test_device_cuda_without_cuda_is_one_line_naming_the_option(tmp_path):
    """Explaining is not training: the message names --device and the choices that work, for every command."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    env = {"HISTCLI_STORE": str(tmp_path / "store.h5"), "HISTCLI_MODELS": str(tmp_path / "models")}
    Store(tmp_path / "store.h5").write([signal_cell(n_genes=90)])
    result = run_cli("train", "--cell", "signal", "--arch", "logistic", "--epochs", 1, "--device", "cuda", env=env)
    assert_one_line_error(result, "--device 'cuda': no CUDA device is available; use --device auto or cpu", code=2)
    trained = run_cli("train", "--cell", "signal", "--arch", "logistic", "--epochs", 1, "--threads", 1, "-q", env=env)
    assert trained.code == 0, trained.stderr
    result = run_cli("explain", "logistic", "--cell", "signal", "--device", "cuda", env=env)
    assert_one_line_error(result, "--device 'cuda': no CUDA device is available; use --device auto or cpu", code=2)
    assert "train" not in result.stderr and result.stdout == ""


def test_explaining_an_empty_split_names_it(tmp_path):
    """--split none means the unsplit genes; the message said 'has no none genes'."""
    env = {"HISTCLI_STORE": str(tmp_path / "store.h5"), "HISTCLI_MODELS": str(tmp_path / "models")}
    Store(tmp_path / "store.h5").write([signal_cell(n_genes=90)])
    trained = run_cli("train", "--cell", "signal", "--arch", "logistic", "--epochs", 1, "--threads", 1, "-q", env=env)
    assert trained.code == 0, trained.stderr
    result = run_cli("explain", "logistic", "--cell", "signal", "--split", "none", env=env)
    assert_one_line_error(result, "cell signal has no unsplit genes (split none) to explain; choose another --split")


def test_explaining_a_cell_changed_since_training_warns(tmp_path):
    env = {"HISTCLI_STORE": str(tmp_path / "store.h5"), "HISTCLI_MODELS": str(tmp_path / "models")}
    Store(tmp_path / "store.h5").write([signal_cell(n_genes=90)])
    trained = run_cli("train", "--cell", "signal", "--arch", "logistic", "--epochs", 1, "--threads", 1, "-q", env=env)
    assert trained.code == 0, trained.stderr
    same = run_cli("explain", "logistic", "--cell", "signal", "--summary", "-f", "tsv", env=env)
    assert same.code == 0 and "changed since" not in same.stderr, same.stderr
    Store(tmp_path / "store.h5").write([signal_cell(n_genes=90, seed=1)], overwrite=True)
    changed = run_cli("explain", "logistic", "--cell", "signal", "--summary", "-f", "tsv", env=env)
    assert changed.code == 0, changed.stderr
    assert "cell signal in" in changed.stderr and "changed since model 'logistic' was trained" in changed.stderr
    assert "explained as it is stored now" in changed.stderr


def test_a_gene_list_is_read_like_any_input_file(tmp_path):
    """From stdin too: a byte-order mark and CRLF line ends change nothing, gzip is read, and a byte that is not
    UTF-8 is named by its line (stdin was read as text: the mark stayed in the first id, the byte became
    U+DCFF or a traceback). A pipe (bash's <(...)) is read like a file."""
    import gzip
    import io
    import subprocess

    from histcli.errors import InputError
    from histcli.explanation import read_gene_list

    assert read_gene_list("-", io.BytesIO(b"\xef\xbb\xbfgene_id\r\nG1\r\nG2\r\n")) == ["G1", "G2"]
    assert read_gene_list("-", io.BytesIO(gzip.compress(b"G3\nG1\n"))) == ["G3", "G1"]
    with pytest.raises(InputError) as caught:
        read_gene_list("-", io.BytesIO(b"G1\n\xff\r\n"))
    assert str(caught.value).startswith("<stdin>, line 2: not UTF-8 text (byte 0xff")
    code = "from histcli.explanation import read_gene_list as r; import sys; print(r(sys.argv[1]))"
    script = f"{sys.executable} -c '{code}' <(printf 'G5\\nG6\\n')"
    listed = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert listed.stdout.strip() == "['G5', 'G6']", listed.stderr
