"""Rules with one owner each: split options, split names, mark names, names, output paths, hashing."""

from __future__ import annotations

import hashlib

import pytest
from conftest import assert_one_line_error, run_cli

from histcli.errors import InputError, UsageError
from histcli.fsutil import check_output_path, file_sha256
from histcli.locations import is_allowed_name
from histcli.marks import parse_marks
from histcli.registry import check_model_name
from histcli.splits import (
    check_split_choice,
    check_split_options,
    parse_chromosome_split,
    parse_split_fractions,
    splits_to_load,
)
from histcli.store import check_cell_name


def test_chromosome_split_text_becomes_a_mapping():
    assert parse_chromosome_split(["test=chr8,chr9", "valid=chr7", "test=chr10"]) == {
        "test": ["chr8", "chr9", "chr10"], "valid": ["chr7"]}
    for bad in ("train=chr1", "test", "test="):
        with pytest.raises(UsageError, match="expected valid=CHROM"):
            parse_chromosome_split([bad])


def test_split_fractions_are_three_numbers_summing_to_one():
    assert parse_split_fractions("0.6,0.2,0.2") == (0.6, 0.2, 0.2)
    for bad, fragment in (("0.5,0.5", "expected three fractions"), ("a,b,c", "expected three fractions"),
                          ("0.5,0.3,0.3", "must sum to 1, not 1.1"), ("1.2,-0.1,-0.1", "between 0 and 1")):
        with pytest.raises(UsageError, match=fragment):
            parse_split_fractions(bad)


def test_one_way_to_split_and_a_valid_one():
    check_split_options(None, None, None)
    check_split_options("split.tsv", None, None)
    with pytest.raises(UsageError, match="cannot be combined"):
        check_split_options("split.tsv", None, (0.6, 0.2, 0.2))
    with pytest.raises(UsageError, match="'train': a chromosome split names chromosomes for 'valid' and 'test' only"):
        check_split_options(None, {"train": ["chr1"]}, None)
    with pytest.raises(UsageError, match="'chr2': chromosome listed twice"):
        check_split_options(None, {"valid": ["chr2"], "test": ["chr2"]}, None)
    with pytest.raises(UsageError, match="must sum to 1"):
        check_split_options(None, None, (0.5, 0.5, 0.5))


def test_split_choices_and_what_they_load():
    assert [splits_to_load(s) for s in ("test", "valid", "train", "none", "all")] == [
        ["test"], ["valid"], ["train"], ["none"], None]
    with pytest.raises(UsageError, match="'holdout'"):
        check_split_choice("holdout")


def test_repeated_or_unknown_marks_are_usage_errors_wherever_they_come_from():
    assert parse_marks(["h3k4me3", "H3K27ME3"]) == ("H3K4me3", "H3K27me3")
    with pytest.raises(UsageError, match="--marks: mark H3K4me3 is given twice"):
        parse_marks(["H3K4me3", "h3k4me3"])
    with pytest.raises(UsageError, match="tracks: 'input' is not a histone mark name"):
        parse_marks(["input"], source="tracks")
    from histcli.cli.options import parse_tracks

    with pytest.raises(UsageError, match="--track: mark H3K4me3 is given twice"):
        parse_tracks(["H3K4me3=a.bw", "h3k4me3=b.bw"])


@pytest.mark.parametrize("name, allowed", [
    ("E116", True), ("sim-01.b_2+x", True), ("a" * 128, True), ("a" * 129, False), (".hidden", False),
    ("..", False), ("a/b", False), ("", False), ("E116\n", False), ("-x", False),
])
def test_cells_and_models_share_one_name_rule(name, allowed):
    assert is_allowed_name(name) is allowed
    for check in (check_cell_name, check_model_name):
        if allowed:
            assert check(name) == name
        else:
            with pytest.raises(Exception, match="is not allowed"):
                check(name)


@pytest.mark.parametrize("value", ["100,20", "a b/c", "x=é", "1e-3"])
def test_sweeps_default_entry_names_follow_the_one_name_rule(value):
    """Grid values become parts of default entry names through the name rule's own characters."""
    from histcli.distributed import entry_name
    from histcli.locations import name_part

    name = entry_name(None, "rnn", 0, True, {"dense": value})
    assert is_allowed_name(name)
    assert name == f"rnn-s0-dense{name_part(value)}"
    assert name_part(value) == "".join(c if c.isascii() and (c.isalnum() or c in "._+-") else "_" for c in value)


def test_file_hash_matches_hashlib_over_the_whole_file(tmp_path):
    data = bytes(range(256)) * 9000  # > 1 MiB: several blocks
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_output_paths_are_checked_before_any_work(tmp_path):
    check_output_path(tmp_path / "new.tsv", "the predictions")
    with pytest.raises(InputError, match="is a folder"):
        check_output_path(tmp_path, "the predictions")
    with pytest.raises(InputError, match=f"folder {tmp_path / 'missing'} does not exist"):
        check_output_path(tmp_path / "missing" / "p.tsv", "the predictions")


def test_environment_variables_name_the_default_store_and_registry(tmp_path, monkeypatch):
    from histcli.locations import default_models_path, default_store_path
    from histcli.registry import Registry
    from histcli.store import Store

    monkeypatch.setenv("HISTCLI_STORE", str(tmp_path / "s.h5"))
    monkeypatch.setenv("HISTCLI_MODELS", str(tmp_path / "m"))
    assert Store().path == default_store_path() == tmp_path / "s.h5"
    assert Registry().root == default_models_path() == tmp_path / "m"


def test_predict_refuses_an_output_folder_before_loading_anything(tmp_path):
    result = run_cli("predict", "nomodel", "--cell", "x", "-", "-o", tmp_path, "--models", tmp_path / "none")
    assert_one_line_error(result, str(tmp_path), "is a folder")


def test_check_output_path_says_a_file_in_the_way_is_not_a_folder(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match=f"cannot write the report: {tmp_path / 'file'} is not a folder"):
        check_output_path(tmp_path / "file" / "r.html", "the report")
