"""`histcli predict`: TSV layouts, tracks, the store, errors, atomic output and bounded memory."""

from __future__ import annotations

import gzip
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, parse_tsv, run_cli, shared_data

from histcli.registry import Registry
from histcli.store import Store

MARKS = ("H3K4me3", "H3K4me1", "H3K36me3", "H3K9me3", "H3K27me3")


@pytest.fixture(scope="module")
def genes(workspace):
    """The first 60 test genes of sim02, in a shuffled order, with their counts."""
    cell = Store(workspace.store).load("sim02", splits=["test"])
    order = np.random.default_rng(0).permutation(cell.n_genes)[:60]
    return cell.gene_ids[order], cell.counts[order]


def write_long(path: Path, gene_ids, counts, marks=MARKS, extra: str | None = None) -> Path:
    columns = list(marks) + ([extra] if extra else [])
    lines = ["gene_id\tbin\t" + "\t".join(columns)]
    for gene, matrix in zip(gene_ids, counts, strict=True):
        for b, row in enumerate(matrix, start=1):
            values = [str(row[MARKS.index(m)]) for m in marks] + (["7"] if extra else [])
            lines.append(f"{gene}\t{b}\t" + "\t".join(values))
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def write_wide(path: Path, gene_ids, counts, marks=MARKS) -> Path:
    n_bins = counts.shape[1]
    header = ["gene_id"] + [f"{m}_{b}" for m in marks for b in range(1, n_bins + 1)]
    lines = ["\t".join(header)]
    for gene, matrix in zip(gene_ids, counts, strict=True):
        lines.append("\t".join([gene] + [str(matrix[b - 1, MARKS.index(m)]) for m in marks
                                         for b in range(1, n_bins + 1)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def predicted(result) -> dict:
    assert result.code == 0, result.stderr
    rows = parse_tsv(result.stdout)
    assert list(rows[0]) == ["gene_id", "probability", "prediction"]
    return {r["gene_id"]: (float(r["probability"]), int(r["prediction"])) for r in rows}


def test_long_wide_gzip_and_stdin_agree_with_the_store(workspace, genes, tmp_path):
    gene_ids, counts = genes
    from_store = predicted(workspace.run("predict", "logistic", "--cell", "sim01", "--from-store", "sim02", "-q"))
    long_file = write_long(tmp_path / "long.tsv", gene_ids, counts, marks=MARKS[::-1], extra="H3K27ac")
    result = workspace.run("predict", "logistic", long_file, "--cell", "sim01")
    assert "ignoring mark(s) H3K27ac" in result.stderr
    long = predicted(result)
    assert list(long) == list(gene_ids)  # input order
    for gene, (probability, call) in long.items():
        # Full float32 precision shows that BLAS rounds differently for other batch compositions.
        assert probability == pytest.approx(from_store[gene][0], rel=1e-6)
        assert call == int(probability >= 0.5)
    wide = predicted(workspace.run("predict", "logistic", write_wide(tmp_path / "w.tsv", gene_ids, counts),
                                   "--cell", "sim01", "-q"))
    gz = predicted(workspace.run("predict", "logistic", write_long(tmp_path / "l.tsv.gz", gene_ids, counts),
                                 "--cell", "sim01", "-q"))
    stdin = predicted(workspace.run("predict", "logistic", "-", "--cell", "sim01", "-q",
                                    stdin=long_file.read_text()))
    for other in (wide, gz, stdin):
        assert list(other) == list(long)
        assert [call for _, call in other.values()] == [call for _, call in long.values()]
        np.testing.assert_allclose([p for p, _ in other.values()], [p for p, _ in long.values()], rtol=1e-6)


def test_json_output_and_threshold(workspace, genes, tmp_path):
    gene_ids, counts = genes
    path = write_long(tmp_path / "l.tsv", gene_ids[:5], counts[:5])
    result = workspace.run("predict", "logistic", path, "--cell", "sim01", "-f", "json", "--threshold", "0.9", "-q")
    items = json.loads(result.stdout)
    assert [i["gene_id"] for i in items] == list(gene_ids[:5])
    assert all(i["prediction"] == int(i["probability"] >= 0.9) for i in items)


def test_output_file_is_atomic(workspace, genes, tmp_path):
    gene_ids, counts = genes
    good = write_long(tmp_path / "good.tsv", gene_ids, counts)
    out = tmp_path / "out.tsv"
    assert workspace.run("predict", "logistic", good, "--cell", "sim01", "-o", out, "-q").code == 0
    before = out.read_text()
    assert before.count("\n") == 61
    # Bad values far into the file: earlier chunks are already predicted when it fails.
    lines = good.read_text().splitlines()
    lines[-3] = lines[-3].rsplit("\t", 1)[0] + "\t-4"
    bad = tmp_path / "bad.tsv"
    bad.write_text("\n".join(lines) + "\n")
    result = workspace.run("predict", "logistic", bad, "--cell", "sim01", "-o", out)
    assert_one_line_error(result, str(bad), f"line {len(lines) - 2}", "negative")
    assert out.read_text() == before
    fresh = tmp_path / "fresh.tsv"
    assert workspace.run("predict", "logistic", bad, "--cell", "sim01", "-o", fresh).code == 1
    assert not fresh.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    # -o - is stdout (as an input of - is stdin), not a file named '-'.
    to_stdout = workspace.run("predict", "logistic", good, "--cell", "sim01", "-o", "-", "-q", cwd=tmp_path)
    assert to_stdout.code == 0 and to_stdout.stdout == before
    assert not (tmp_path / "-").exists()
    # -o naming the input (or a link to it) would replace the user's counts with predictions: refused.
    kept = good.read_bytes()
    (tmp_path / "link.tsv").symlink_to(good)
    for target in (good, tmp_path / "link.tsv"):
        result = workspace.run("predict", "logistic", good, "--cell", "sim01", "-o", target)
        assert_one_line_error(result, f"-o {target} is the input file {good}", code=2)
        assert good.read_bytes() == kept
    # Nor the store (the input of --from-store), nor a file of the model.
    store = workspace.store.read_bytes()
    result = workspace.run("predict", "logistic", "--cell", "sim01", "--from-store", "sim02", "-o", workspace.store)
    assert_one_line_error(result, f"-o {workspace.store} is the input file", code=2)
    assert workspace.store.read_bytes() == store
    folder = Registry(workspace.models).get("logistic", "sim01").path
    config = (folder / "config.json").read_bytes()
    result = workspace.run("predict", "--model", folder, good, "-o", folder / "config.json")
    assert_one_line_error(result, "is inside the model's folder", code=2)
    assert (folder / "config.json").read_bytes() == config
    cell_file = next(Store(workspace.store).cells_dir.iterdir())
    content = cell_file.read_bytes()
    result = workspace.run("predict", "logistic", good, "--cell", "sim01", "-o", cell_file)
    assert_one_line_error(result, f"-o {cell_file} is inside the store's cell folder", code=2)
    assert cell_file.read_bytes() == content


BAD_LONG = {
    "missing mark": (lambda lines: ["\t".join(lines[0].split("\t")[:-1])] + [line.rsplit("\t", 1)[0] for line in lines[1:]],
                     "line 1", "H3K27me3 needed by the model are missing"),
    "unknown mark name": (lambda lines: [lines[0].replace("H3K9me3", "H3K9foo")] + lines[1:], "line 1",
                          "unknown mark name 'H3K9foo'"),
    "wrong number of bins": (lambda lines: lines[:5] + lines[6:], "expected bins 1..20", "bin 5 is missing"),
    "non-numeric value": (lambda lines: lines[:7] + [lines[7].rsplit("\t", 1)[0] + "\tNA"] + lines[8:], "line 8",
                          "field H3K27me3", "'NA' is not a number"),
    "negative value": (lambda lines: lines[:9] + [lines[9].rsplit("\t", 1)[0] + "\t-1"] + lines[10:], "line 10",
                       "negative"),
    "duplicate gene": (lambda lines: lines + lines[1:21], "line 62", "appears again (first at line 2)"),
    "wrong column count": (lambda lines: lines[:3] + [lines[3] + "\t5"] + lines[4:], "line 4",
                           "expected 7 tab-separated fields"),
    "mark given twice": (lambda lines: [lines[0].replace("H3K9me3", "h3k4me3")] + lines[1:], "line 1",
                         "field h3k4me3", "columns 'H3K4me3' and 'h3k4me3' are both mark H3K4me3"),
    "gene without an id": (lambda lines: lines[:21] + ["\t" + line.split("\t", 1)[1] for line in lines[21:41]]
                           + lines[41:], "line 22", "field gene_id", "empty gene id"),
    "gene id with a space": (lambda lines: lines[:24] + [lines[24].replace("\t", " \t", 1)] + lines[25:], "line 25",
                             "field gene_id", "gene id has leading or trailing spaces"),
    # A stray \r does not end a line (as it would in pandas' and Python's universal newlines): lines keep the
    # numbers `sed -n` gives them, and the field holding it is named.
    "carriage return inside the header": (lambda lines: [lines[0].replace("H3K9me3", "H3K9\rme3")] + lines[1:],
                                          "line 1", "unknown mark name 'H3K9\\rme3'"),
    "carriage return inside a gene id": (lambda lines: lines[:30] + [lines[30][:1] + "\r" + lines[30][1:]] + lines[31:],
                                         "line 31", "field gene_id", "holds a control character"),
    # Fields are split at every tab, never read as CSV quoting: pandas took '"G"' for the gene G (and so let a
    # gene given again in quotes through) and a quoted tab for part of an id.
    "CSV-quoted gene id": (lambda lines: lines[:21] + [f'"{line.split(chr(9), 1)[0]}"\t{line.split(chr(9), 1)[1]}'
                                                       for line in lines[21:41]] + lines[41:],
                           "line 22", "field gene_id", "holds a double quote", "quote = FALSE"),
    "quoted tab inside a gene id": (lambda lines: lines[:3] + ['"G\tH"\t' + lines[3].split("\t", 1)[1]] + lines[4:],
                                    "line 4", "expected 7 tab-separated fields"),
    "rows sorted by bin": (lambda lines: lines[:1] + sorted(lines[1:], key=lambda line: int(line.split("\t")[1])),
                           "line 5", "appears again (first at line 2)", "the rows of a gene must be consecutive"),
}


@pytest.mark.parametrize("case", sorted(BAD_LONG))
def test_bad_long_input_names_the_line(workspace, genes, tmp_path, case):
    gene_ids, counts = genes
    breaker, *fragments = BAD_LONG[case]
    lines = write_long(tmp_path / "ok.tsv", gene_ids[:3], counts[:3]).read_text().splitlines()
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(breaker(lines)) + "\n")
    assert_one_line_error(workspace.run("predict", "logistic", path, "--cell", "sim01"), str(path), *fragments)


@pytest.mark.parametrize("line_break", ["\r\n", "\r"])
def test_windows_and_old_mac_line_breaks_give_the_same_predictions(workspace, genes, tmp_path, line_break):
    gene_ids, counts = genes
    plain = write_long(tmp_path / "plain.tsv", gene_ids[:5], counts[:5])
    other = tmp_path / "other.tsv"
    other.write_bytes(plain.read_bytes().replace(b"\n", line_break.encode()))
    wanted = predicted(workspace.run("predict", "logistic", plain, "--cell", "sim01", "-q"))
    assert predicted(workspace.run("predict", "logistic", other, "--cell", "sim01", "-q")) == wanted


def test_bad_wide_input_names_the_line(workspace, genes, tmp_path):
    gene_ids, counts = genes
    path = write_wide(tmp_path / "w.tsv", gene_ids[:4], counts[:4])
    lines = path.read_text().splitlines()
    short = tmp_path / "short.tsv"
    short.write_text("\n".join(["\t".join(line.split("\t")[:-1]) for line in lines]) + "\n")
    assert_one_line_error(workspace.run("predict", "logistic", short, "--cell", "sim01"),
                          "line 1", "mark H3K27me3 has 19 bin columns, no column H3K27me3_20; the model expects "
                          "H3K27me3_1..H3K27me3_20")
    zero_based = tmp_path / "zero.tsv"
    zero_based.write_text("\n".join([lines[0].replace("H3K27me3_20", "H3K27me3_0")] + lines[1:]) + "\n")
    assert_one_line_error(workspace.run("predict", "logistic", zero_based, "--cell", "sim01"),
                          "line 1", "mark H3K27me3 has 20 bin columns, no column H3K27me3_20; columns outside the "
                          "model's bins: H3K27me3_0; the model expects H3K27me3_1..H3K27me3_20")
    # Columns named from the header: the missing ones (not only how many), and any past the model's bins.
    header = lines[0].split("\t")
    renamed = {"H3K9me3_4": "H3K9me3_21", "H3K9me3_5": "H3K9me3_22", **{f"H3K9me3_{b}": None for b in range(6, 9)}}
    keep = [i for i, name in enumerate(header) if renamed.get(name, name) is not None]
    shifted = tmp_path / "shifted.tsv"
    shifted.write_text("\n".join(["\t".join(renamed.get(header[i], header[i]) for i in keep)]
                                 + ["\t".join(line.split("\t")[i] for i in keep) for line in lines[1:]]) + "\n")
    assert_one_line_error(workspace.run("predict", "logistic", shifted, "--cell", "sim01"),
                          "line 1", "mark H3K9me3 has 17 bin columns, no column H3K9me3_4, H3K9me3_5, H3K9me3_6 "
                          "(and 2 more); columns outside the model's bins: H3K9me3_21, H3K9me3_22; the model expects "
                          "H3K9me3_1..H3K9me3_20")
    duplicated = tmp_path / "dup.tsv"
    duplicated.write_text("\n".join(lines + [lines[2]]) + "\n")
    assert_one_line_error(workspace.run("predict", "logistic", duplicated, "--cell", "sim01"),
                          "line 6", f"gene {gene_ids[1]} appears again (first at line 3)")
    negative = tmp_path / "neg.tsv"
    negative.write_text("\n".join(lines[:3] + [lines[3].rsplit("\t", 1)[0] + "\t-2"] + lines[4:]) + "\n")
    assert_one_line_error(workspace.run("predict", "logistic", negative, "--cell", "sim01"),
                          "line 4", "field H3K27me3_20", "negative")
    stdin = workspace.run("predict", "logistic", "-", "--cell", "sim01", stdin=negative.read_text())
    assert_one_line_error(stdin, "<stdin>, line 4")
    unnamed = tmp_path / "unnamed.tsv"
    unnamed.write_text("\n".join(lines[:2] + [" \t" + lines[2].split("\t", 1)[1]] + lines[3:]) + "\n")
    assert_one_line_error(workspace.run("predict", "logistic", unnamed, "--cell", "sim01"),
                          "line 3", "field gene_id", "empty gene id")
    quoted_again = tmp_path / "quoted.tsv"
    quoted_again.write_text("\n".join(lines + [f'"{gene_ids[1]}"\t' + lines[2].split("\t", 1)[1]]) + "\n")
    assert_one_line_error(workspace.run("predict", "logistic", quoted_again, "--cell", "sim01"),
                          "line 6", "field gene_id", f'gene id "{gene_ids[1]}" holds a double quote')
    spaced = tmp_path / "spaced.tsv"
    spaced.write_text("\n".join(lines[:4] + [" " + lines[4]]) + "\n")
    assert_one_line_error(workspace.run("predict", "logistic", spaced, "--cell", "sim01"),
                          "line 5", "field gene_id", "gene id has leading or trailing spaces")


def test_an_input_compressed_other_than_gzip_says_so(workspace, genes, tmp_path):
    import bz2

    gene_ids, counts = genes
    text = write_long(tmp_path / "l.tsv", gene_ids[:2], counts[:2]).read_bytes()
    path = tmp_path / "l.tsv.bz2"
    path.write_bytes(bz2.compress(text))
    assert_one_line_error(workspace.run("predict", "logistic", path, "--cell", "sim01"), str(path),
                          "is bzip2-compressed; only plain text and gzip are read", "bunzip2")


def test_a_header_that_is_not_utf8_names_its_byte(workspace, genes, tmp_path):
    """A Latin-1 'é' in a mark name showed as U+FFFD in an 'unknown mark' message; it is named like the data
    lines' bytes are."""
    gene_ids, counts = genes
    text = write_long(tmp_path / "l.tsv", gene_ids[:2], counts[:2]).read_bytes()
    path = tmp_path / "latin1.tsv"
    path.write_bytes(text.replace(b"H3K9me3", b"H3K9m\xe93", 1))
    assert_one_line_error(workspace.run("predict", "logistic", path, "--cell", "sim01"),
                          f"{path}, line 1: not UTF-8 text (byte 0xe9 at character")


def test_an_input_of_a_byte_order_mark_alone_says_so(workspace, tmp_path):
    path = tmp_path / "bom.tsv"
    path.write_bytes(b"\xef\xbb\xbf")
    assert_one_line_error(workspace.run("predict", "logistic", path, "--cell", "sim01"),
                          f"{path}: a byte-order mark with no content, expected a header line")


def test_an_empty_gzip_input_says_it_is_empty(workspace, tmp_path):
    path = tmp_path / "l.tsv.gz"
    path.write_bytes(gzip.compress(b""))  # 20 bytes of gzip framing around nothing
    result = workspace.run("predict", "logistic", path, "--cell", "sim01")
    assert_one_line_error(result, f"{path}: gzip data with no content, expected a header line")
    assert result.stdout == ""


def test_control_characters_of_a_header_are_shown_escaped(workspace, genes, tmp_path):
    # Printed raw, an escape sequence would recolour or clear the terminal.
    import io

    from histcli.errors import InputError
    from histcli.prediction import PredictionWriter, Predictor, predict_table

    gene_ids, counts = genes
    lines = write_long(tmp_path / "ok.tsv", gene_ids[:1], counts[:1]).read_text().splitlines()
    predictor = Predictor(Registry(workspace.models).get("logistic", "sim01"))
    path = tmp_path / "bad.tsv"
    for header, message in [
        (lines[0].replace("H3K9me3", "H3K9me3\x1b[2K"),
         r"line 1, field 'H3K9me3\x1b[2K': unknown mark name 'H3K9me3\x1b[2K' in the header"),
        (lines[0].replace("gene_id", "gene\x07id"),
         r"line 3: expected 7 tab-separated fields ('gene\x07id', bin, H3K4me3, H3K4me1, H3K36me3, H3K9me3, "
         "H3K27me3), found 8"),
    ]:
        path.write_text("\n".join([header, lines[1], lines[2] + "\t1"] + lines[3:]) + "\n")
        with pytest.raises(InputError) as caught:
            predict_table(predictor, str(path), PredictionWriter(io.StringIO()))
        assert str(caught.value) == f"{path}, {message}"


@pytest.mark.parametrize("layout", ["long", "wide"])
def test_a_header_without_genes_leaves_stdout_empty(workspace, genes, tmp_path, layout):
    gene_ids, counts = genes
    written = (write_long if layout == "long" else write_wide)(tmp_path / "full.tsv", gene_ids[:1], counts[:1])
    path = tmp_path / "header.tsv"
    path.write_text(written.read_text().splitlines()[0] + "\n")
    result = workspace.run("predict", "logistic", path, "--cell", "sim01")
    assert_one_line_error(result, str(path), "no data lines")
    assert result.stdout == ""


def test_model_folder_copied_elsewhere(workspace, genes, tmp_path):
    gene_ids, counts = genes
    path = write_long(tmp_path / "l.tsv", gene_ids, counts)
    copy = tmp_path / "my-model"
    shutil.copytree(Registry(workspace.models).get("deepchrome", "sim03").path, copy)
    via_folder = predicted(run_cli("predict", "--model", copy, path, "-q"))
    via_registry = predicted(workspace.run("predict", "deepchrome", path, "--cell", "sim03", "-q"))
    assert via_folder == via_registry


def test_input_option_and_the_earlier_spellings_agree(workspace, genes, tmp_path):
    gene_ids, counts = genes
    path = write_long(tmp_path / "l.tsv", gene_ids[:20], counts[:20])
    copy = tmp_path / "my-model"
    shutil.copytree(Registry(workspace.models).get("logistic", "sim01").path, copy)
    runs = [workspace.run("predict", "logistic", "--cell", "sim01", "--input", path, "-q"),
            workspace.run("predict", "logistic", path, "--cell", "sim01", "-q"),
            run_cli("predict", "--model", copy, "-i", path, "-q"),
            run_cli("predict", "--model", copy, path, "-q")]
    first = predicted(runs[0])
    assert list(first) == list(gene_ids[:20])
    assert all(predicted(result) == first for result in runs[1:])


def test_options_that_do_not_go_with_the_input_are_refused(workspace, genes, tmp_path):
    path = write_long(tmp_path / "l.tsv", genes[0][:2], genes[1][:2])
    for extra, fragment in ((("--split", "test"), "--split goes with --from-store"),
                            (("--genes", path), "--genes goes with --track"),
                            (("--window", 100), "--window goes with --track"),
                            (("--model", tmp_path), "give --model DIR or NAME --cell CELL, not both")):
        result = workspace.run("predict", "logistic", "--cell", "sim01", "--input", path, *extra)
        assert_one_line_error(result, fragment, code=2)
    assert_one_line_error(workspace.run("predict", "logistic", "--cell", "sim01", "--input", path, path),
                          "give the input once", code=2)
    assert_one_line_error(workspace.run("predict", "logistic", "--cell", "sim01"), "exactly one input", code=2)
    usage = run_cli("predict", "--help").stdout
    assert "--input" in usage and "[NAME]" in usage and "INPUT]" not in usage


def test_usage_errors(workspace, genes, tmp_path):
    path = write_long(tmp_path / "l.tsv", genes[0][:2], genes[1][:2])
    assert_one_line_error(workspace.run("predict", "logistic", path), "NAME --cell CELL", code=2)
    assert_one_line_error(workspace.run("predict", "logistic", path, "--cell", "sim01", "--from-store", "sim02"),
                          "exactly one input", code=2)
    assert_one_line_error(workspace.run("predict", "logistic", "--cell", "sim01", "--track", "H3K4me3=x.bedGraph"),
                          "--track needs --genes", code=2)
    assert_one_line_error(workspace.run("predict", "logistic", tmp_path / "none.tsv", "--cell", "sim01"),
                          "none.tsv", "no such file")


def test_tracks_that_do_not_fit_the_model_are_named_as_the_track_input(workspace, tmp_path):
    # The cell binned from --track is no stored cell: its errors name the tracks, not a cell called 'predict'.
    track = tmp_path / "t.bedGraph"
    track.write_text("chr1\t0\t5000\t3\n")
    genes = tmp_path / "genes.bed"
    genes.write_text("chr1\t2000\t2001\tg1\t0\t+\nchr1\t3000\t3001\tg2\t0\t-\n")
    tracks = [f"--track={mark}={track}" for mark in MARKS]
    other_bins = workspace.run("predict", "logistic", "--cell", "sim01", *tracks, "--genes", genes, "--bin-size", 200)
    assert_one_line_error(other_bins, "model 'logistic' (trained on sim01) expects 20 bins of 100 bp, but the track "
                                      "input has 10 bins of 200 bp")
    missing = workspace.run("predict", "logistic", "--cell", "sim01", *tracks[:4], "--genes", genes)
    assert_one_line_error(missing, f"needs mark(s) {MARKS[4]}, which the track input lacks (it has")
    assert other_bins.stdout == missing.stdout == ""
    assert "predict" not in other_bins.stderr + missing.stderr


@pytest.mark.slow
def test_tracks_give_the_same_predictions_as_the_prepared_cell(tmp_path):
    data = shared_data("e116-10kb")
    tracks = [f"--track={m}={data / f'E116.{m}.bedGraph.gz'}" for m in MARKS]
    env = {"HISTCLI_STORE": str(tmp_path / "s.h5"), "HISTCLI_MODELS": str(tmp_path / "models")}
    prepared = run_cli("prepare", "tracks", "--cell", "E116", *tracks, "--genes", data / "genes.hg19.bed",
                       "--expression", data / "E116.expression.tsv", "--split", data / "deepchrome_split.tsv",
                       "--bin-size", 10000, "--window", 100000, "--drop-missing", "-q", env=env)
    assert prepared.code == 0, prepared.stderr
    assert run_cli("train", "--cell", "E116", "--arch", "logistic", "--epochs", 3, "-q", env=env).code == 0
    from_tracks = run_cli("predict", "logistic", "--cell", "E116", *tracks, "--genes", data / "genes.hg19.bed",
                          "--drop-missing", "-q", env=env)
    from_store = run_cli("predict", "logistic", "--cell", "E116", "--from-store", "E116", "--split", "all", "-q",
                         env=env)
    assert from_tracks.code == 0, from_tracks.stderr
    assert from_tracks.stdout == from_store.stdout
    assert from_tracks.stdout.count("\n") == 18915 + 1
    # Pipes (bash's <(...)), gzip data too, give the same predictions: read_tracks_cell reads each once.
    piped_tracks = " ".join(f"--track={m}=<(cat {shlex.quote(str(data / f'E116.{m}.bedGraph.gz'))})" for m in MARKS)
    command = (f"{shlex.quote(sys.executable)} -m histcli predict logistic --cell E116 {piped_tracks} "
               f"--genes <(cat {shlex.quote(str(data / 'genes.hg19.bed'))}) --drop-missing -q")
    piped = subprocess.run(["bash", "-c", command], env={**os.environ, **env}, capture_output=True, text=True,
                           timeout=600)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == from_store.stdout


@pytest.mark.slow
def test_a_million_genes_stream_in_bounded_memory(workspace, tmp_path):
    """Peak memory stays far below what holding the input would take."""
    store, models = tmp_path / "s.h5", tmp_path / "models"
    env = {"HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(models)}
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 300, "--bins", 4, "-q", env=env).code == 0
    assert run_cli("train", "--cell", "sim01", "--arch", "logistic", "--epochs", 1, "-q", env=env).code == 0
    n_genes = 1_000_000
    rng = np.random.default_rng(1)
    values = rng.integers(0, 30, size=(n_genes, 20))
    path = tmp_path / "million.tsv"
    with open(path, "w") as handle:
        handle.write("gene_id\t" + "\t".join(f"{m}_{b}" for m in MARKS for b in range(1, 5)) + "\n")
        for start in range(0, n_genes, 100_000):
            block = values[start : start + 100_000]
            handle.write("\n".join(f"g{start + i}\t" + "\t".join(map(str, row))
                                   for i, row in enumerate(block.tolist())) + "\n")
    out = tmp_path / "out.tsv"
    # VmHWM, not ru_maxrss: a child inherits the latter from the (large) test process at fork.
    peak = "import re; print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
    # The app itself, not the entry point, which ends the process without returning here.
    script = (f"import sys; sys.argv = ['histcli', 'predict', 'logistic', '--cell', 'sim01', "
              f"'{path}', '-o', '{out}', '-q']\nfrom histcli.cli.app import app\n"
              "try:\n    app(prog_name='histcli')\n"
              "except SystemExit as e:\n    assert not e.code, e.code\n" + peak)
    baseline = "import torch, pandas, h5py, histcli.prediction, histcli.cli.app\n" + peak
    def run(code: str):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                              env={**os.environ, **env})

    measured, base = run(script), run(baseline)
    assert measured.returncode == 0, measured.stderr
    peak_mb, base_mb = int(measured.stdout.split()[-1]) / 1024, int(base.stdout.split()[-1]) / 1024
    assert out.read_text().count("\n") == n_genes + 1
    input_mb = path.stat().st_size / 2**20
    # The input alone is ~60 MB of text and 160 MB as float64 counts; streaming needs far less.
    assert peak_mb - base_mb < 120, (peak_mb, base_mb, input_mb)


def test_streaming_in_many_chunks_keeps_input_order_and_values(workspace, genes, tmp_path):
    """Chunks scored in the background thread come out in input order, as one whole-array forward gives them."""
    import io

    from histcli.errors import InputError
    from histcli.prediction import PredictionWriter, Predictor, predict_table

    gene_ids, counts = genes
    predictor = Predictor(Registry(workspace.models).get("deepchrome", "sim01"))
    expected = predictor.scores(counts.astype(np.float64))
    for path in (write_long(tmp_path / "long.tsv", gene_ids, counts, marks=MARKS[::-1]),
                 write_wide(tmp_path / "wide.tsv", gene_ids, counts)):
        stream = io.StringIO()
        writer = PredictionWriter(stream)
        assert predict_table(predictor, str(path), writer, genes_per_chunk=7) == len(gene_ids)
        writer.close()
        rows = parse_tsv(stream.getvalue())
        assert [row["gene_id"] for row in rows] == list(gene_ids), path
        np.testing.assert_allclose([float(row["probability"]) for row in rows], expected, rtol=1e-5)

    # A bad value in a late chunk stops the stream with its line; the earlier chunks were scored.
    lines = (tmp_path / "long.tsv").read_text().splitlines()
    bad_line = 1 + 45 * counts.shape[1] + 3
    fields = lines[bad_line - 1].split("\t")
    lines[bad_line - 1] = "\t".join(fields[:2] + ["-4"] + fields[3:])
    (tmp_path / "bad.tsv").write_text("\n".join(lines) + "\n")
    stream = io.StringIO()
    with pytest.raises(InputError) as error:
        predict_table(predictor, str(tmp_path / "bad.tsv"), PredictionWriter(stream), genes_per_chunk=7)
    assert error.value.line == bad_line and "negative value -4" in str(error.value)
    assert 1 < len(parse_tsv(stream.getvalue())) <= 45


def test_an_error_while_scoring_reaches_the_caller(workspace, genes, tmp_path):
    from histcli.errors import StdoutClosed
    from histcli.prediction import PredictionWriter, Predictor, predict_table

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError

    gene_ids, counts = genes
    predictor = Predictor(Registry(workspace.models).get("deepchrome", "sim01"))
    path = write_long(tmp_path / "long.tsv", gene_ids, counts)
    with pytest.raises(StdoutClosed):
        predict_table(predictor, str(path), PredictionWriter(ClosedPipe()), genes_per_chunk=7)


def test_after_a_failed_chunk_no_later_chunk_is_written(workspace, genes, tmp_path):
    """The output stays a prefix of the input: chunks queued behind a failure are skipped."""
    import io
    import time

    from histcli.prediction import PredictionWriter, Predictor, predict_table

    class FailingSecondChunk(Predictor):
        sizes: list[int] = []

        def scores(self, counts):
            self.sizes.append(len(counts))
            if len(self.sizes) == 2:
                time.sleep(0.3)  # the reader queues the next chunk meanwhile
                raise RuntimeError("out of memory")
            return super().scores(counts)

    gene_ids, counts = genes
    predictor = FailingSecondChunk(Registry(workspace.models).get("deepchrome", "sim01"))
    stream = io.StringIO()
    with pytest.raises(RuntimeError, match="out of memory"):
        predict_table(predictor, str(write_long(tmp_path / "long.tsv", gene_ids, counts)),
                      PredictionWriter(stream), genes_per_chunk=7)
    # Only the first block was written, and no block after the failed one was scored.
    assert len(FailingSecondChunk.sizes) == 2
    first = FailingSecondChunk.sizes[0]
    assert [row["gene_id"] for row in parse_tsv(stream.getvalue())] == list(gene_ids[:first])


def test_duplicate_check_across_many_chunks_matches_a_set(tmp_path):
    """Ids in 300 small chunks: the first repeat is found at its lines, as a plain set finds it."""
    from histcli.errors import InputError
    from histcli.prediction import _DuplicateCheck

    rng = np.random.default_rng(3)
    ids = [f"ENSG{n:011d}" for n in rng.choice(10**9, size=3000, replace=False)]
    ids[2717] = ids[41]
    path = tmp_path / "ids.tsv"
    path.write_text("gene_id\n" + "\n".join(ids) + "\n")
    seen, expected = {}, None
    for line, gene in enumerate(ids, start=2):
        if gene in seen:
            expected = (seen[gene], line)
            break
        seen[gene] = line
    check = _DuplicateCheck(path, "ids.tsv")
    with pytest.raises(InputError) as error:
        for start in range(0, len(ids), 10):
            check.add(ids[start : start + 10], np.arange(start, start + 10) + 2)
    assert (error.value.line, f"first at line {expected[0]}") == (expected[1], f"first at line {expected[0]}")
    assert f"first at line {expected[0]}" in str(error.value)
    assert len(check.runs) <= 12  # sizes halve from run to run: about log2(2710 / 10) runs
    unique = _DuplicateCheck(path, "ids.tsv")
    for start in range(0, 2700, 10):
        unique.add(ids[start : start + 10], np.arange(start, start + 10) + 2)
    assert unique.count == 2700


def test_tsv_probabilities_read_back_as_the_same_float32(workspace):
    """Nine significant digits: the TSV, the JSON and evaluate's AUC all see the same float32 probabilities."""
    from histcli.metrics import roc_auc
    from histcli.store import SPLIT_CODES, Store

    args = ("predict", "logistic", "--cell", "sim01", "--from-store", "sim02", "--split", "test", "-q")
    tsv = np.array([row["probability"] for row in parse_tsv(workspace.run(*args).stdout)], dtype=np.float32)
    as_json = np.array([item["probability"] for item in json.loads(workspace.run(*args, "-f", "json").stdout)],
                       dtype=np.float32)
    assert np.array_equal(tsv, as_json)
    assert len(np.unique(tsv)) > len(tsv) // 2
    cell = Store(workspace.store).load("sim02")
    labels = cell.labels[cell.split == SPLIT_CODES["test"]]
    evaluated = workspace.run("evaluate", "logistic", "--cell", "sim01", "--on-cell", "sim02", "-f", "json", "-q")
    assert roc_auc(labels, tsv) == json.loads(evaluated.stdout)["rows"][0]["auc"]
    # Every float32 survives the text: also the extremes a logit of +-40 gives.
    values = np.concatenate([np.random.default_rng(0).random(10_000, dtype=np.float32),
                             np.float32([1e-38, 4.2e-18, 0.99999994, 1.0])])
    assert np.array_equal(np.array([f"{v:.9g}" for v in values.tolist()], dtype=np.float32), values)


def test_a_bad_bin_is_reported_at_its_own_line(workspace, genes, tmp_path):
    """The line of the row with the bin out of range or given again; the gene's first line for a missing bin."""
    gene_ids, counts = genes
    lines = write_long(tmp_path / "ok.tsv", gene_ids[:3], counts[:3]).read_text().splitlines()

    def with_bin(index: int, number: int) -> list[str]:
        gene, _, rest = lines[index].split("\t", 2)
        return lines[:index] + [f"{gene}\t{number}\t{rest}"] + lines[index + 1:]

    # Line 1 is the header; the second gene's rows are lines 22..41 (list indices 21..40).
    for changed, fragments in ((with_bin(27, 21), ("line 28", "bin 21 is outside 1..20")),
                               (with_bin(30, 3), ("line 31", "bin 3 appears twice")),
                               (lines[:25] + lines[26:], ("line 22", "bin 5 is missing"))):
        path = tmp_path / "bad.tsv"
        path.write_text("\n".join(changed) + "\n")
        assert_one_line_error(workspace.run("predict", "logistic", path, "--cell", "sim01"), str(path),
                              f"gene {gene_ids[1]}", *fragments)


@pytest.mark.parametrize("marks, options, said", [
    (["H3K4me3", "H3K4me1", "H3K36me3", "H3K9me3"], [],
     "needs mark(s) H3K27me3, which the track input lacks (it has H3K4me3, H3K4me1, H3K36me3, H3K9me3)"),
    (["H3K4me3", "H3K4me1", "H3K36me3", "H3K9me3", "H3K27me3"], ["--bin-size", "50"],
     "expects 4 bins of 100 bp, but the track input has 8 bins of 50 bp"),
])
def test_predict_from_tracks_that_cannot_fit_the_model_stops_before_reading_them(tiny_model, tmp_path, marks,
                                                                                  options, said):
    """A mark the model needs but --track lacks, or a --bin-size that gives other bins, is known from the
    command line: it is the one error line before any track or gene file is read (these do not exist), instead
    of after binning every track genome-wide and noting what the gene file held."""
    tracks = [arg for mark in marks for arg in ("--track", f"{mark}={tmp_path / mark}.bedGraph.gz")]
    result = run_cli("predict", "logistic", "--cell", "sim01", *tracks, "--genes", tmp_path / "genes.bed",
                     *options, env=tiny_model)
    assert_one_line_error(result, f"model 'logistic' (trained on sim01) {said}")
    assert len(result.stderr.splitlines()) == 1
