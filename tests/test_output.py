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
