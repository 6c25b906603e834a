"""Tables for people: nothing is cut at common terminal widths."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from histcli import output
from histcli.output import Column, human_text


def render(monkeypatch, width: int, rows, columns, **kwargs) -> str:
    buffer = io.StringIO()
    monkeypatch.setattr(output, "console", lambda stderr=False: Console(file=buffer, width=width, no_color=True,
                                                                         highlight=False))
    monkeypatch.setattr(output, "stdout_is_terminal", lambda: True)
    output.write_rich_table(rows, columns, **kwargs)
    return buffer.getvalue()


COLUMNS = [Column("model", justify="left"), Column("cell", justify="left"), Column("arch", justify="left"),
           Column("marks", justify="left"), Column("seed"), Column("best_epoch"), Column("valid_auc", digits=4),
           Column("train_genes"), Column("valid_genes"), Column("seconds", digits=1), Column("converged"),
           Column("interrupted")]
ROWS = [{"model": "crnn-ensemble-long-name", "cell": f"E{100 + i}", "arch": "attentivechrome",
         "marks": "H3K4me3,H3K4me1,H3K36me3,H3K9me3,H3K27me3", "seed": "0-4", "best_epoch": 282 + i,
         "valid_auc": 0.92654 + i / 1000, "train_genes": 6601, "valid_genes": 6601, "seconds": 1234.56,
         "converged": i % 2 == 0, "interrupted": False} for i in range(3)]


@pytest.mark.parametrize("width", [80, 100, 160])
def test_no_value_is_cut_at_common_widths(monkeypatch, width):
    text = render(monkeypatch, width, ROWS, COLUMNS, title="trained")
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    for row in ROWS:
        for column in COLUMNS:
            assert human_text(row[column.key], column) in text, (column.key, width)
    for column in COLUMNS:
        assert column.title in text


def test_a_table_that_fits_stays_one_table(monkeypatch):
    columns = [Column("model", justify="left"), Column("auc", digits=4)]
    rows = [{"model": "crnn", "auc": 0.9}, {"model": "cnn", "auc": 0.91}]
    text = render(monkeypatch, 80, rows, columns)
    lines = [line.split() for line in text.splitlines() if line.strip()]
    assert lines[0] == ["model", "auc"]
    assert ["crnn", "0.9000"] in lines and ["cnn", "0.9100"] in lines


def test_too_wide_tables_become_one_block_per_row(monkeypatch):
    text = render(monkeypatch, 80, ROWS, COLUMNS, title="trained")
    assert "trained (1 of 3)" in text and "trained (3 of 3)" in text
    block = text.split("trained (2 of 3)")[1].split("trained (3 of 3)")[0]
    assert ["cell", "E101"] in [line.split() for line in block.splitlines()]


def test_titles_are_never_wrapped_to_the_width_of_the_table(monkeypatch):
    """A title longer than its table (a path, two model names) stays on one line, in both layouts."""
    title = "trained into /scratch/lab/histcli-data/models"
    rows = [{**row, "model": "cnn", "arch": "cnn", "marks": "H3K4me3"} for row in ROWS]
    text = render(monkeypatch, 80, rows, COLUMNS, title=title)  # too wide: one narrow block per row
    lines = [line.strip() for line in text.splitlines()]
    assert f"{title} (1 of 3)" in lines and f"{title} (3 of 3)" in lines
    narrow = [Column("cell", justify="left"), Column("auc", digits=4)]
    title = "AUC, A = a_really_long_model_name_30chr vs B = logistic, test genes"
    text = render(monkeypatch, 80, [{"cell": "E003", "auc": 0.9}], narrow, title=title)
    assert title in [line.strip() for line in text.splitlines()]
    assert ["E003", "0.9000"] in [line.split() for line in text.splitlines()]


def test_a_folding_column_keeps_a_field_value_table_one_table(monkeypatch):
    """`models show`: a long value (the history, a path) folds inside its column rather than turning each
    field into a block of its own."""
    history = " ".join(f"{epoch}:{0.8 + epoch / 10000:.4f}" for epoch in range(1, 301))
    rows = [{"field": "path", "value": "/scratch/lab/histcli-data/models/a_really_long_model_name_30chr/E116"},
            {"field": "training.lr", "value": 0.001}, {"field": "history", "value": history}]
    columns = [Column("field", justify="left"), Column("value", justify="left", fold=True)]
    text = render(monkeypatch, 80, rows, columns, title="crnn for E116")
    assert "(1 of" not in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert ["training.lr", "0.001"] in [line.split() for line in text.splitlines()]
    # Every epoch's value is there, whole: the history folds at its spaces.
    assert text.split().count("1:0.8001") == 1 and "300:0.8300" in text.split()
    # The path may fold mid-word, but all of it is there, in order.
    assert "".join(text.split()).count(rows[0]["value"]) == 1


def test_a_folding_column_too_narrow_to_read_still_gives_one_block_per_row(monkeypatch):
    columns = [*COLUMNS, Column("notes", justify="left", fold=True)]
    rows = [{**row, "notes": "converged after a long plateau"} for row in ROWS]
    text = render(monkeypatch, 80, rows, columns, title="trained")
    assert "trained (1 of 3)" in text and "…" not in text


def test_small_values_keep_their_meaning_in_people_s_tables():
    """A p-value below the shown precision is not shown as 0; a duration is (train's 0.016 s read '1.6e-02')."""
    p_value, seconds = Column("p", digits=4), Column("seconds", digits=1, fixed=True)
    assert human_text(3.2e-7, p_value) == "3.2e-07" and human_text(0.01234, p_value) == "0.0123"
    assert human_text(0.0156, seconds) == "0.0" and human_text(0.06, seconds) == "0.1"
    assert human_text(1234.56, seconds) == "1234.6"


@pytest.mark.parametrize("task_name", ["classification", "regression"])
def test_tune_table_with_three_searched_keys_is_one_table_at_80_columns(monkeypatch, task_name):
    """It was about 88 columns wide (valid_auc, best_epoch and best as headers), so each trial became a block."""
    from histcli.cli.tune import tune_columns
    from histcli.tasks import make_task

    task = make_task(task_name)
    keys = ["lr", "weight_decay", "dropout"]
    rows = [{"trial": number, "lr": 0.000123456789 * number, "weight_decay": 1.23456e-05 * number,
             "dropout": 0.123456 * number % 0.6, f"valid_{task.selection_metric}": 0.91234567 - number / 1000,
             "best_epoch": 480 + number, "epochs": 1000, "status": "completed", "best": number == 13}
            for number in range(10, 20)]
    text = render(monkeypatch, 80, rows, tune_columns(keys, task), title="search of crnn on E116")
    assert "(1 of" not in text and "…" not in text
    lines = [line.split() for line in text.splitlines()]
    assert lines[1][:4] == ["trial", "lr", "weight_decay", "dropout"] and lines[1][-1] == "chosen"
    assert ["10", human_text(0.00123456789, Column("lr"))] == lines[3][:2] and lines[3][-2:] == ["completed", "no"]


def test_values_every_row_shares_are_said_once_above_the_table(monkeypatch):
    """`store list` of 56 DeepChrome cells: the marks (41 characters), bins and bin size are alike in every
    row, so they are said once and the cells make one table at 80 columns, not 56 blocks; a column whose
    values differ stays a column, and TSV keeps every column."""
    from histcli.cli.store_cmd import summary_columns

    marks = "H3K4me3,H3K4me1,H3K36me3,H3K9me3,H3K27me3"
    rows = [{"cell": f"E{index:03d}", "genes": 19802, "train": 6601, "valid": 6601, "test": 6600, "unsplit": 0,
             "bins": 100, "bin_size": 100, "marks": marks, "positive_fraction": 0.5 + index / 1000}
            for index in range(3, 59)]
    text = render(monkeypatch, 80, rows, summary_columns(), title="store.h5")
    lines = text.splitlines()
    assert "(1 of" not in text and max(len(line) for line in lines) <= 80
    assert lines[0] == "store.h5" and lines[1] == f"every row: bins=100 bin_size=100 marks={marks}"
    assert lines[2].split() == ["cell", "genes", "train", "valid", "test", "unsplit", "positive"]
    # Narrower, the line wraps between its key=value words, never inside one.
    narrow = render(monkeypatch, 60, rows, summary_columns(), title="store.h5").splitlines()
    assert [line.rstrip() for line in narrow[1:3]] == ["every row: bins=100 bin_size=100", f"marks={marks}"]
    assert ["E058", "19802", "6601", "6601", "6600", "0", "55.8%"] in [line.split() for line in lines]
    assert text.count(marks) == 1
    # Cells of two bin sizes: bin_size stays a column; what is alike is still said once.
    rows[0] = {**rows[0], "bin_size": 10000}
    lines = render(monkeypatch, 80, rows, summary_columns(), title="store.h5").splitlines()
    assert lines[1] == f"every row: bins=100 marks={marks}"
    assert "bin_size" in lines[2].split() and lines[4].split()[:2] == ["E003", "19802"]
    # One row has nothing to share with another: its values stay in their columns.
    text = render(monkeypatch, 200, rows[:1], summary_columns())
    assert "every row" not in text and marks.replace(",", ", ") in text  # people see ", " between marks
    assert output.delimited(rows[:2], summary_columns(), "\t").splitlines()[0].split("\t")[6:9] == \
        ["bins", "bin_size", "marks"]


@pytest.mark.parametrize("width", [50, 60, 80, 100])
@pytest.mark.parametrize("description", ["crnn E116", "attentivechrome-wide E003 seed 12",
                                         "a_really_long_model_name_30chr cell_type_with_a_long_name_01 seed 4"])
def test_progress_lines_cut_no_count_status_or_time(width, description):
    """train's bars at 1,000 epochs: the bar gives way, and a long description wraps, before any text is cut;
    on narrow lines the status wraps between its words too. The last two columns stay free for the
    terminal's "^C" echo."""
    from histcli.cli.console import BAR_MIN_WIDTH, progress_display

    status = "loss 0.4830 AUC 0.8289 best 0.8289@500"
    buffer = io.StringIO()
    out = Console(file=buffer, width=width, no_color=True, highlight=False)
    bar = progress_display(out, "status")
    task = bar.add_task(description, total=1000, status=status)
    bar.update(task, completed=999)
    bar.add_task("evaluating", total=12, status="")
    out.print(bar.make_tasks_table(bar.tasks))
    text = buffer.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width - 2
    assert "999/1000" in text and "0/12" in text and text.count("0:00:00") == 2
    lines = text.splitlines()
    evaluating = next(i for i, line in enumerate(lines) if "0/12" in line)
    bar_start = min(lines[0].index(c) for c in "━╸" if c in lines[0])
    status_start = lines[0].index("999/1000") + len("999/1000 ")
    status_end = lines[0].rindex("0:00:00")
    # The description and the status are whole in their columns, read down their lines.
    described = "".join("".join(line[:bar_start].split()) for line in lines[:evaluating])
    assert described == "".join(description.split())
    assert " ".join(line[status_start:status_end].strip() for line in lines[:evaluating]).split() == status.split()
    if len(description) + BAR_MIN_WIDTH + len(f" 999/1000 {status} 0:00:00 ") <= width - 2:
        assert description in text  # a description that fits beside the narrowest bar is never broken
    if len(max(description.split(), key=len)) + BAR_MIN_WIDTH + len(f" 999/1000 {status} 0:00:00 ") <= width - 2:
        assert status in text  # the status wraps only where the description cannot make room


def test_consecutive_tables_are_set_apart_by_a_blank_line(monkeypatch):
    """Titles stand on their own lines, left: evaluate's cells table and summary, or compare's pairs,
    need a blank line between them to read as separate tables."""
    buffer = io.StringIO()
    monkeypatch.setattr(output, "console", lambda stderr=False: Console(file=buffer, width=80, no_color=True))
    monkeypatch.setattr(output, "stdout_is_terminal", lambda: True)
    columns = [Column("model", justify="left"), Column("auc", digits=4)]
    output.write_rich_table([{"model": "crnn", "auc": 0.9}], columns, title="classification, test genes")
    output.write_rich_table([{"model": "crnn", "auc": 0.9}], columns, title="classification, summary over cells")
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "classification, test genes"
    second = lines.index("classification, summary over cells")
    assert lines[second - 1] == "" and lines[second - 2].split() == ["crnn", "0.9000"]


@pytest.mark.parametrize("width", [80, 100])
def test_compare_summary_breaks_lines_between_phrases_only(monkeypatch, width):
    """The summary panel on a terminal: no line past the width, no number parted from its name."""
    import re

    from histcli.cli.compare import _print_rich
    from histcli.comparison import Comparison, PairComparison
    from histcli.stats import paired_summary

    a, b = [0.8392, 0.8427, 0.7756, 0.7918], [0.8360, 0.8455, 0.8018, 0.8083]
    pair = PairComparison("logistic", "deepchrome-long-name", cells=[], summary=paired_summary(a, b))
    pair.summary.wilcoxon_p_holm = 0.75
    result = Comparison(models=["logistic", "deepchrome-long-name"], cells=[], values={}, pairs=[pair],
                        notes=["cells sim05 and sim06 are left out: deepchrome-long-name has no entry for them"])
    buffer = io.StringIO()
    monkeypatch.setattr(output, "console", lambda stderr=False: Console(file=buffer, width=width, no_color=True,
                                                                         highlight=False))
    monkeypatch.setattr(output, "stdout_is_terminal", lambda: True)
    _print_rich(result, "test")
    lines = buffer.getvalue().splitlines()
    assert max(len(line) for line in lines) <= width
    inside = [line.strip("│ ") for line in lines if line.startswith("│")]
    text = " ".join(inside)
    verdict = pair.verdict()
    assert " ".join(verdict.split()) in text  # nothing lost or reordered, only folded
    for phrase in [f"Wilcoxon p = {pair.summary.wilcoxon_p:.2g}", "Holm-adjusted p = 0.75",
                   re.search(r"\[[^]]+\]", text).group(), f"mean AUC {pair.summary.mean_a:.4f} vs "
                   f"{pair.summary.mean_b:.4f}", "rank-biserial r = -0.600"]:
        assert any(phrase in line for line in inside), (phrase, inside)
    assert inside[0].startswith("deepchrome-long-name > logistic in 3/4 cells")


def test_counted_makes_the_noun_plural_unless_the_count_is_one():
    assert output.counted(1, "epoch") == "1 epoch"
    assert output.counted(0, "epoch") == "0 epochs"
    assert output.counted(12, "trained trial") == "12 trained trials"


def test_a_store_of_two_layouts_folds_its_marks_between_whole_marks(monkeypatch):
    """Cell1 and E116 hold their marks in two orders, so the marks stay a column (41 characters): at 100
    columns the column folds between marks, keeping one table, where it used to give one block per cell."""
    from histcli.cli.store_cmd import summary_columns

    orders = ["H3K4me1,H3K4me3,H3K9me3,H3K27me3,H3K36me3", "H3K4me3,H3K4me1,H3K36me3,H3K9me3,H3K27me3"]
    rows = [{"cell": cell, "genes": genes, "train": 200, "valid": 200, "test": 200, "unsplit": 0, "bins": bins,
             "bin_size": bin_size, "marks": marks, "positive_fraction": 0.5}
            for cell, genes, bins, bin_size, marks in (("Cell1", 600, 200, 100, orders[0]),
                                                       ("E116", 18915, 20, 10000, orders[1]))]
    text = render(monkeypatch, 100, rows, summary_columns(), title="store.h5")
    assert "(1 of" not in text and "…" not in text and max(len(line) for line in text.splitlines()) <= 100
    table_rows = [line for line in text.splitlines() if line.startswith(("Cell1", "E116", " "))]
    for cell, marks in (("Cell1", orders[0]), ("E116", orders[1])):
        start = next(index for index, line in enumerate(table_rows) if line.startswith(cell))
        # The row's marks, read across its folded lines, are the cell's marks in their order, each whole.
        shown = " ".join(line[line.index("H3K"):].rsplit("  ", 1)[0] for line in table_rows[start:start + 2]
                         if "H3K" in line)
        assert shown.replace(" ", "").split(",") == marks.split(","), (cell, shown)
    assert output.delimited(rows, summary_columns(), "\t").splitlines()[1].split("\t")[8] == orders[0]
