"""The HDF5 store: round trips, format versions, golden fixtures, upgrade, atomicity and concurrency."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error, file_digest, parse_tsv, run_cli, stalled_at_commit

from histcli.errors import CellExistsError, NameNotAllowedError, StoreError
from histcli.store import SPLIT_CODES, CellData, Store, fingerprint_cell

DATA = Path(__file__).with_name("data")
GOLDEN = DATA / "golden_store_v1.0.h5"
GOLDEN_V2 = DATA / "golden_store_v2.0" / "store.h5"


def make_cell(name: str, n_genes: int = 6, n_bins: int = 4, seed: int = 0, dtype=np.int32) -> CellData:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 50, size=(n_genes, n_bins, 3)).astype(dtype)
    return CellData(
        name=name,
        counts=counts,
        gene_ids=np.array([f"gene{i}" for i in range(n_genes)], dtype=object),
        marks=("H3K4me3", "H3K36me3", "H3K27me3"),
        bin_size=100,
        window=n_bins * 50,
        tss_offset=n_bins * 50,
        split=np.array([SPLIT_CODES[("train", "valid", "test")[i % 3]] for i in range(n_genes)], dtype=np.uint8),
        expression=rng.uniform(0, 10, n_genes),
        labels=(np.arange(n_genes) % 2).astype(np.int8),
    )


def test_round_trip_keeps_every_field(tmp_path):
    cell = make_cell("E001")
    store = Store(tmp_path / "s.h5")
    store.write([cell])
    loaded = store.load("E001")
    np.testing.assert_array_equal(loaded.counts, cell.counts)
    assert loaded.counts.dtype == np.int32
    assert list(loaded.gene_ids) == list(cell.gene_ids)
    np.testing.assert_array_equal(loaded.split, cell.split)
    np.testing.assert_array_equal(loaded.labels, cell.labels)
    np.testing.assert_allclose(loaded.expression, cell.expression)
    assert loaded.marks == cell.marks
    assert (loaded.bin_size, loaded.window, loaded.tss_offset) == (100, 200, 200)
    assert loaded.fingerprint == fingerprint_cell(cell)

    test_only = store.load("E001", splits=["test"])
    assert list(test_only.gene_ids) == ["gene2", "gene5"]
    np.testing.assert_array_equal(test_only.counts, cell.counts[[2, 5]])

    summary = store.summary("E001")
    assert summary.split_sizes == {"none": 0, "train": 2, "valid": 2, "test": 2}
    assert summary.positive_fraction == pytest.approx(0.5)


def test_float_counts_are_stored_as_float32(tmp_path):
    cell = make_cell("F", dtype=np.float32)
    cell.counts = cell.counts + np.float32(0.25)
    Store(tmp_path / "s.h5").write([cell])
    loaded = Store(tmp_path / "s.h5").load("F")
    assert loaded.counts.dtype == np.float32
    np.testing.assert_array_equal(loaded.counts, cell.counts)


def test_fingerprint_changes_with_data_but_not_with_blocks():
    cell = make_cell("E001")
    before = fingerprint_cell(cell)
    whole = cell.counts
    cell.counts = [whole[:2], whole[2:5], whole[5:]]
    assert fingerprint_cell(cell) == before
    cell.counts = whole.copy()
    cell.counts[0, 0, 0] += 1
    assert fingerprint_cell(cell) != before


def test_schema_attributes_on_root_and_every_group(tmp_path, monkeypatch):
    path = tmp_path / "s.h5"
    Store(path).write([make_cell("E001"), make_cell("E002", seed=2)])
    # Plain h5py, from another working folder, reads every cell through the link file.
    monkeypatch.chdir(DATA)
    with h5py.File(path, "r") as handle:
        assert handle.attrs["encoding-type"] == "histcli-store"
        assert handle.attrs["encoding-version"] == "2.0"
        for seed, name in enumerate(("E001", "E002"), start=0):
            link = handle["cells"].get(name, getlink=True)
            assert isinstance(link, h5py.ExternalLink)
            # Relative to the link file's folder, so that the store's folder can move.
            assert link.filename.startswith("s.h5.cells/") and link.path == "/"
            group = handle["cells"][name]
            assert group.attrs["encoding-type"] == "histcli-cell"
            assert group.attrs["encoding-version"] == "2.0"
            counts = group["counts"]
            assert counts.compression == "gzip"
            assert counts.chunks[1:] == counts.shape[1:]  # chunked along genes only
            np.testing.assert_array_equal(counts[()], make_cell(name, seed=2 * seed).counts)
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "s.h5.cells").iterdir()) == ["E001", "E002"]


def test_newer_format_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "s.h5"
    Store(path).write([make_cell("E001")])
    with h5py.File(path, "r+") as handle:
        handle.attrs["encoding-version"] = "3.0"
    with pytest.raises(StoreError, match="newer than this histcli"):
        Store(path).cell_names()


@pytest.mark.parametrize("path", [GOLDEN, GOLDEN_V2], ids=["v1.0", "v2.0"])
def test_golden_store_stays_readable(path):
    check_golden_contents(Store(path))


def check_golden_contents(store: Store) -> None:
    """What tests/data/make_golden_store.py wrote, whichever format holds it."""
    assert store.cell_names() == ["E000", "float-cell"]
    cell = store.load("E000")
    np.testing.assert_array_equal(cell.counts, np.arange(24, dtype=np.int32).reshape(4, 3, 2))
    assert list(cell.gene_ids) == ["ENSG00000000003_TSPAN6", "ENSG00000000005_TNMD", "g3", "g4"]
    assert cell.marks == ("H3K4me3", "H3K27me3")
    assert list(cell.split) == [1, 2, 3, 0]
    assert list(cell.labels) == [0, 1, 1, 0]
    np.testing.assert_array_equal(cell.expression, [0.5, 7.25, 3.0, 0.0])
    assert list(cell.coordinates["chrom"]) == ["chr1", "chr1", "chr2", "chrX"]
    assert list(cell.coordinates["tss"]) == [1000, 5000, 42, 7]
    assert list(cell.coordinates["strand"]) == ["+", "-", "+", "-"]
    assert cell.attrs["label_threshold"] == 1.75
    assert cell.fingerprint == "e02addc7f2d7873b68c1f6505edb54d3458a1c5ebf94684d39606294f00a00ec"
    # The fingerprint algorithm must not drift either: registries rely on it.
    assert fingerprint_cell(cell) == cell.fingerprint
    other = store.load("float-cell")
    assert other.counts.dtype == np.float32
    np.testing.assert_array_equal(other.counts[:, :, 0], [[0.5, 1.25], [2.0, 0.0]])
    assert other.labels is None and other.expression is None
    assert store.summary("E000").sources == [{"path": "/data/E000.csv", "sha256": "0" * 64}]


def test_existing_cell_needs_overwrite_and_others_survive(tmp_path):
    store = Store(tmp_path / "s.h5")
    store.write([make_cell("E001"), make_cell("E002", seed=2)])
    digest = file_digest(store.path)
    with pytest.raises(CellExistsError, match="cell 'E001' already exists") as caught:
        store.write([make_cell("E001", seed=5)])
    assert (caught.value.store, caught.value.cell) == (str(store.path), "E001")
    assert file_digest(store.path) == digest
    replacement = make_cell("E001", seed=5)
    store.write([replacement], overwrite=True)
    np.testing.assert_array_equal(store.load("E001").counts, replacement.counts)
    np.testing.assert_array_equal(store.load("E002").counts, make_cell("E002", seed=2).counts)


def test_remove_keeps_other_cells(tmp_path):
    store = Store(tmp_path / "s.h5")
    store.write([make_cell("E001"), make_cell("E002", seed=2)])
    store.remove(["E001"])
    assert store.cell_names() == ["E002"]
    with pytest.raises(StoreError, match="no cell 'E001'"):
        store.load("E001")


def test_unsafe_cell_names_are_refused(tmp_path):
    for name in ("a/b", "../x", "", ".hidden", "sp ace", "x" * 200):
        with pytest.raises(NameNotAllowedError, match="not allowed"):
            Store(tmp_path / "s.h5").write([make_cell(name)])
    assert not (tmp_path / "s.h5").exists()


def _store_fingerprints(path: Path) -> dict[str, str]:
    store = Store(path)
    return {name: store.fingerprint(name) for name in store.cell_names()}


def test_sigkill_during_prepare_leaves_the_store_intact(tmp_path):
    path = tmp_path / "s.h5"
    run = run_cli("prepare", "simulate", "--cells", 2, "--genes", 300, "--bins", 20, "--store", path, "-q")
    assert run.code == 0, run.stderr
    before = _store_fingerprints(path)
    before_counts = Store(path).load("sim01").counts
    # Kill writers at several moments: while simulating, staging, and committing.
    for delay in (0.3, 0.9, 1.5, 2.2, 3.0):
        process = subprocess.Popen(
            [sys.executable, "-m", "histcli", "prepare", "simulate", "--cells", "3", "--genes", "20000",
             "--bins", "100", "--prefix", "big", "--store", str(path), "-q"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        after = _store_fingerprints(path)
        # Either the write landed completely or not at all, and the old cells are intact.
        assert {k: v for k, v in after.items() if k in before} == before
        assert set(after) in (set(before), set(before) | {"big01", "big02", "big03"})
        np.testing.assert_array_equal(Store(path).load("sim01").counts, before_counts)
    # A later write cleans up what the killed writers left behind.
    run = run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 5, "--prefix", "after",
                  "--store", path, "-q")
    assert run.code == 0, run.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".staging-" in p.name]
    assert leftovers == []
    assert_only_linked_cell_files(path)


def test_concurrent_prepares_from_a_bash_loop_all_land(tmp_path):
    path = tmp_path / "s.h5"
    script = (
        "set -e\n"
        f"for cell in A B C D E F; do\n"
        f"  {sys.executable} -m histcli prepare simulate --cells 1 --genes 3000 --bins 50 --seed 7 "
        f"--prefix $cell --store {path} -q >/dev/null &\n"
        "done\n"
        "wait\n"
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert Store(path).cell_names() == [f"{c}01" for c in "ABCDEF"]
    for cell in "ABCDEF":
        loaded = Store(path).load(f"{cell}01")
        assert loaded.counts.shape == (3000, 50, 5)
        assert fingerprint_cell(loaded) == loaded.fingerprint
    assert_only_linked_cell_files(path)


def test_readers_work_while_another_process_writes(tmp_path):
    path = tmp_path / "s.h5"
    Store(path).write([make_cell("E001")])
    expected = Store(path).load("E001").counts
    writer = subprocess.Popen(
        ["bash", "-c", " && ".join(
            f"{sys.executable} -m histcli prepare simulate --cells 2 --genes 4000 --bins 50 --prefix w{i} "
            f"--store {path} -q >/dev/null" for i in range(3))],
    )
    reads = 0
    try:
        while writer.poll() is None:
            np.testing.assert_array_equal(Store(path).load("E001").counts, expected)
            reads += 1
    finally:
        writer.wait()
    assert writer.returncode == 0
    assert reads > 0
    assert len(Store(path).cell_names()) == 7


def test_unwritable_store_path_is_one_line_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        # Root may write anywhere on a normal file system; /proc refuses even root.
        target = locked if not os.access(locked, os.W_OK) else Path("/proc/1")
        result = run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 5,
                         "--store", target / "s.h5")
        assert_one_line_error(result, str(target), "not writable")
    finally:
        locked.chmod(0o700)


def test_store_path_under_a_file_is_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 5,
                     "--store", blocker / "s.h5")
    assert_one_line_error(result, str(blocker))


def test_store_list_names_a_folder_given_for_the_store_as_every_store_command_does(tmp_path):
    """store list had its own check, which called a folder 'does not exist'; the store's check says what it is."""
    for command in (["store", "list"], ["store", "show", "x"]):
        result = run_cli(*command, "--store", tmp_path)
        assert_one_line_error(result, f"store {tmp_path}: is a folder, not a store file", str(tmp_path / "store.h5"))
    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "none.h5").summaries()
    # Choosing every stored cell: not "the store holds no cells".
    result = run_cli("train", "--all-cells", "--arch", "logistic", "--store", tmp_path)
    assert_one_line_error(result, f"store {tmp_path}: is a folder, not a store file")
    assert Store(tmp_path / "none.h5").cell_names() == []
    # A store that is not there, for train and sweep alike (one owner: cli.options.chosen_cells).
    for command in ("train", "sweep"):
        result = run_cli(command, "--all-cells", "--arch", "logistic", "--store", tmp_path / "none.h5")
        assert_one_line_error(result, f"store {tmp_path / 'none.h5'}: does not exist")
    empty = tmp_path / "empty.h5"
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 5, "--store", empty, "-q").code == 0
    assert run_cli("store", "rm", "sim01", "--store", empty).code == 0
    result = run_cli("sweep", "--all-cells", "--arch", "logistic", "--store", empty)
    assert_one_line_error(result, f"--all-cells: the store {empty} holds no cells", code=2)


def test_loading_an_unknown_split_names_the_store_and_the_splits(tmp_path):
    path = tmp_path / "s.h5"
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 5, "--store", path, "-q").code == 0
    with pytest.raises(StoreError) as error:
        Store(path).load("sim01", splits=["holdout"])
    assert str(error.value) == f"store {path}: unknown split 'holdout'; expected one of none, train, valid, test"


def test_store_that_is_not_hdf5_is_reported(tmp_path):
    path = tmp_path / "s.h5"
    path.write_text("not hdf5")
    result = run_cli("store", "list", "--store", path)
    assert_one_line_error(result, str(path), "HDF5")


def linked_files(path: Path) -> set[str]:
    with h5py.File(path, "r") as handle:
        return {handle["cells"].get(name, getlink=True).filename for name in handle["cells"]}


def assert_only_linked_cell_files(path: Path) -> None:
    """The cells folder holds exactly the files the link file references: nothing orphaned or half-written."""
    on_disk = {f"{path.name}.cells/{p.name}" for p in Path(f"{path}.cells").iterdir()}
    assert on_disk == linked_files(path)


def test_a_write_leaves_the_files_of_other_cells_untouched(tmp_path):
    store = Store(tmp_path / "s.h5")
    store.write([make_cell("E001")])
    (first,) = store.cells_dir.iterdir()
    before = first.stat()
    store.write([make_cell("E002", seed=2)])
    store.write([make_cell("E003", seed=3), make_cell("E004", seed=4)])
    after = first.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert len(list(store.cells_dir.iterdir())) == 4
    # Replacing a cell gives it a new file and deletes the old one; so does removing it.
    store.write([make_cell("E001", seed=9)], overwrite=True)
    assert not first.exists()
    np.testing.assert_array_equal(store.load("E001").counts, make_cell("E001", seed=9).counts)
    store.remove(["E002"])
    assert store.cell_names() == ["E001", "E003", "E004"]
    assert_only_linked_cell_files(store.path)
    np.testing.assert_array_equal(store.load("E004").counts, make_cell("E004", seed=4).counts)


def test_a_moved_store_folder_reads_through_relative_links(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    run = run_cli("prepare", "simulate", "--cells", 2, "--genes", 30, "--bins", 5, "-q", cwd=work,
                  env={"HISTCLI_STORE": "data/store.h5"})
    assert run.code == 0, run.stderr
    expected = Store(work / "data" / "store.h5").load("sim02").counts
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(work / "data", moved)
    # A decoy with the links' relative paths under the working folder must not be read instead.
    decoy = work / "store.h5.cells"
    shutil.copytree(moved / "store.h5.cells", decoy)
    for file in decoy.iterdir():
        with h5py.File(file, "r+") as handle:
            handle["counts"][...] = -1
    monkeypatch.chdir(work)
    relative = Path("..") / "elsewhere" / "moved" / "store.h5"
    np.testing.assert_array_equal(Store(relative).load("sim02").counts, expected)
    with h5py.File(relative, "r") as handle:
        np.testing.assert_array_equal(handle["cells/sim02/counts"][()], expected)
    # The moved store takes new cells, and its old ones stay readable.
    run = run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 5, "--prefix", "new", "-q",
                  env={"HISTCLI_STORE": str(relative)}, cwd=work)
    assert run.code == 0, run.stderr
    assert Store(relative).cell_names() == ["new01", "sim01", "sim02"]
    np.testing.assert_array_equal(Store(moved / "store.h5").load("sim02").counts, expected)
    assert_only_linked_cell_files(moved / "store.h5")


def test_a_reader_whose_cell_was_replaced_meanwhile_reads_the_new_version(tmp_path, monkeypatch):
    store = Store(tmp_path / "s.h5")
    store.write([make_cell("E001")])
    replacement = make_cell("E001", seed=4)
    real_open = Store._open
    opened = []

    def open_then_let_a_writer_commit(self):
        handle = real_open(self)
        opened.append(self.path)
        if len(opened) == 1:
            # Between this reader opening the link file and reading the cell, a writer
            # replaces the cell and deletes the file the reader's link file points to.
            Store(self.path).write([replacement], overwrite=True)
        return handle

    monkeypatch.setattr(Store, "_open", open_then_let_a_writer_commit)
    loaded = store.load("E001")
    np.testing.assert_array_equal(loaded.counts, replacement.counts)
    assert loaded.fingerprint == fingerprint_cell(replacement)


def test_a_missing_or_damaged_cell_file_is_one_line_error(tmp_path):
    path = tmp_path / "s.h5"
    Store(path).write([make_cell("E001")])
    (cell_file,) = (tmp_path / "s.h5.cells").iterdir()
    cell_file.write_text("not hdf5")
    result = run_cli("store", "show", "E001", "--store", path)
    assert_one_line_error(result, str(path), "'E001'", "cannot be read")
    shutil.rmtree(tmp_path / "s.h5.cells")
    assert Store(path).cell_names() == ["E001"]
    result = run_cli("store", "show", "E001", "--store", path)
    assert_one_line_error(result, str(path), "'E001'", "missing", "s.h5.cells")


def test_readers_see_whole_cells_while_a_cell_is_overwritten(tmp_path):
    path = tmp_path / "s.h5"
    args = "prepare simulate --cells 1 --genes 2000 --bins 20 --prefix X --overwrite -q"
    assert run_cli(*args.split(), "--store", path).code == 0
    writer = subprocess.Popen(["bash", "-c", " && ".join(
        f"{sys.executable} -m histcli {args} --seed {seed} --store {path} >/dev/null" for seed in range(1, 5))])
    reads = 0
    try:
        while writer.poll() is None:
            cell = Store(path).load("X01")
            assert fingerprint_cell(cell) == cell.fingerprint
            reads += 1
    finally:
        writer.wait()
    assert writer.returncode == 0 and reads > 0
    assert_only_linked_cell_files(path)


def test_upgrade_converts_a_single_file_store_in_place(tmp_path):
    path = tmp_path / "old.h5"
    shutil.copy(GOLDEN, path)
    refused = run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 4, "--store", path)
    assert_one_line_error(refused, str(path), "format 1.0", "histcli store upgrade")
    assert file_digest(path) == file_digest(GOLDEN)

    result = run_cli("store", "upgrade", "--store", path, "-f", "tsv")
    assert result.code == 0, result.stderr
    assert [row["cell"] for row in parse_tsv(result.stdout)] == ["E000", "float-cell"]
    assert Store(path).format_version() == "2.0"
    check_golden_contents(Store(path))
    # Every dataset and attribute came over with its type, values and storage layout.
    with h5py.File(GOLDEN, "r") as old, h5py.File(path, "r") as new:
        for name in old["cells"]:
            before, after = old["cells"][name], new["cells"][name]
            assert isinstance(new["cells"].get(name, getlink=True), h5py.ExternalLink)
            assert set(after.attrs) == set(before.attrs)
            for key in before.attrs:
                if key != "encoding-version":
                    assert after.attrs.get_id(key).dtype == before.attrs.get_id(key).dtype, key
                    np.testing.assert_array_equal(after.attrs[key], before.attrs[key])
            assert after.attrs["encoding-version"] == "2.0"
            assert set(after) == set(before)
            for key in before:
                assert (after[key].dtype, after[key].chunks, after[key].compression) == (
                    before[key].dtype, before[key].chunks, before[key].compression)
                np.testing.assert_array_equal(after[key][()], before[key][()])
                assert dict(after[key].attrs) == dict(before[key].attrs)
    assert_only_linked_cell_files(path)

    again = run_cli("store", "upgrade", "--store", path, "-f", "tsv")
    assert again.code == 0 and "nothing to do" in again.stderr
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 4, "--store", path,
                   "-q").code == 0
    assert Store(path).cell_names() == ["E000", "float-cell", "sim01"]


def test_sigkill_during_upgrade_leaves_the_old_store(tmp_path):
    path = tmp_path / "old.h5"
    shutil.copy(GOLDEN, path)
    with stalled_at_commit(f"store_module.Store({str(path)!r}).upgrade()"):
        # Killed with the converted cells in place and the new link file half-made beside the old file.
        assert len(list((tmp_path / "old.h5.cells").iterdir())) == 2
    assert file_digest(path) == file_digest(GOLDEN)
    assert Store(path).format_version() == "1.0"
    check_golden_contents(Store(path))
    assert run_cli("store", "upgrade", "--store", path, "-q").code == 0
    check_golden_contents(Store(path))
    assert_only_linked_cell_files(path)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".staging-" in p.name]


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32])
def test_counts_in_many_chunks_and_uneven_blocks_read_back_exactly(tmp_path, dtype):
    """Chunks are compressed outside HDF5 and written as stored: HDF5's own filters must read them."""
    cell = make_cell("E001", n_genes=2000, n_bins=100, dtype=dtype)
    rng = np.random.default_rng(3)
    whole = (rng.random((2000, 100, 3)) * 1e4).astype(dtype)
    # Blocks that start and end inside chunks (512 KiB: 436 or 218 genes), the last chunk padded.
    cell.counts = [whole[:1], whole[1:700], whole[700:701], whole[701:]]
    Store(tmp_path / "s.h5").write([cell])
    with h5py.File(tmp_path / "s.h5", "r") as handle:
        counts = handle["cells/E001/counts"]
        assert counts.chunks == (2**19 // (300 * np.dtype(dtype).itemsize), 100, 3)
        assert counts.shuffle and counts.compression == "gzip"
        np.testing.assert_array_equal(counts[()], whole)
        np.testing.assert_array_equal(counts[1990:], whole[1990:])
        del counts  # it holds the cell's file open, with HDF5's file locks unlike the store's reads
    assert Store(tmp_path / "s.h5").fingerprint("E001") == fingerprint_cell(cell)


def test_every_source_attribute_survives_a_round_trip(tmp_path):
    """What a source records about a cell comes back on load and in the summary, whatever its name."""
    import dataclasses

    attrs = {"label_rule": "value > median", "expression_file": "roadmap.tsv.gz", "expression_column": "E116",
             "a_future_attribute": 3}
    cell = dataclasses.replace(make_cell("E001"), attrs=attrs)
    store = Store(tmp_path / "s.h5")
    store.write([cell])
    assert store.load("E001").attrs == attrs
    assert store.summary("E001").attrs == attrs
    clashing = dataclasses.replace(make_cell("E002"), attrs={"fingerprint": "mine"})
    with pytest.raises(StoreError, match="attribute fingerprint is the store's own"):
        store.write([clashing])
    assert store.cell_names() == ["E001"]


def test_store_show_is_one_table_at_80_columns(tmp_path, monkeypatch):
    """The fingerprint (64 characters) and source paths fold in the value column: one line per field."""
    import io

    from rich.console import Console

    from histcli import output
    from histcli.cli.options import OutputFormat
    from histcli.cli.store_cmd import show_cell

    monkeypatch.chdir(tmp_path)
    store = Store(Path("a-long-folder-name-for-the-lab-study") / "s.h5")
    store.write([make_cell("E001")])
    buffer = io.StringIO()
    monkeypatch.setattr(output, "console", lambda stderr=False: Console(file=buffer, width=80, no_color=True))
    monkeypatch.setattr(output, "stdout_is_terminal", lambda: True)
    show_cell("E001", store_path=store.path, output_format=OutputFormat.table)
    text = buffer.getvalue()
    assert "(1 of" not in text and "…" not in text and max(map(len, text.splitlines())) <= 80
    assert text.splitlines()[0].strip() == f"E001 in {store.path}"
    assert ["genes_test", "2"] in [line.split() for line in text.splitlines()]
    assert store.fingerprint("E001") in "".join(text.split())


def test_a_prepare_of_a_cell_another_run_is_preparing_fails_before_reading(tmp_path):
    store_path = tmp_path / "store.h5"
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 4, "--store", store_path,
                   "-q").code == 0
    before = file_digest(store_path)
    with Store(store_path).reserve(["sim02"]):  # as a `histcli prepare ... --cell sim02` would
        result = run_cli("prepare", "simulate", "--cells", 2, "--genes", 30, "--bins", 4, "--store", store_path,
                         "--overwrite", "-q")
        assert_one_line_error(result, "cell 'sim02' is being prepared by another histcli process", "wait for it")
        assert file_digest(store_path) == before and Store(store_path).cell_names() == ["sim01"]
        # Other cells are not held.
        other = run_cli("prepare", "simulate", "--cells", 1, "--prefix", "other", "--genes", 30, "--bins", 4,
                        "--store", store_path, "-q")
        assert other.code == 0, other.stderr
    result = run_cli("prepare", "simulate", "--cells", 2, "--genes", 30, "--bins", 4, "--store", store_path,
                     "--overwrite", "-q")
    assert result.code == 0, result.stderr
    assert Store(store_path).cell_names() == ["other01", "sim01", "sim02"]


def test_store_list_names_a_folder_given_as_the_store(tmp_path):
    """`store list --store DIR` said the folder did not exist; every other command said it was a folder."""
    store = tmp_path / "store.h5"
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 5, "--store", store, "-q").code == 0
    listed = run_cli("store", "list", "--store", tmp_path)
    assert_one_line_error(listed, f"store {tmp_path}: is a folder, not a store file (e.g. {store})")
    assert listed.stdout == ""
    assert_one_line_error(run_cli("store", "list", "--store", tmp_path / "none.h5"),
                          f"store {tmp_path / 'none.h5'}: does not exist")


def test_store_rm_lists_a_cell_named_twice_once(tmp_path):
    store = tmp_path / "store.h5"
    assert run_cli("prepare", "simulate", "--cells", 2, "--genes", 30, "--bins", 5, "--store", store, "-q").code == 0
    removed = run_cli("store", "rm", "sim01", "sim01", "--store", store, "-f", "tsv")
    assert removed.code == 0, removed.stderr
    assert [row["cell"] for row in parse_tsv(removed.stdout)] == ["sim01"]
    assert Store(store).cell_names() == ["sim02"]


def test_a_device_or_pipe_given_as_the_store_is_refused_and_left_alone(tmp_path):
    """`--store /dev/null` made prepare rename its new link file over the device (as root, /dev/null became a
    plain file) and put the cells folder beside it; a device or pipe is now refused before anything is written.
    A FIFO stands in for the device here."""
    fifo = tmp_path / "store.h5"
    os.mkfifo(fifo)
    for args in (("prepare", "simulate", "--cells", 1, "--genes", 30, "--bins", 5), ("store", "list")):
        result = run_cli(*args, "--store", fifo, timeout=60)
        assert_one_line_error(result, f"store {fifo}: is a device or pipe, not a store file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["store.h5"]


def test_a_link_to_a_store_writes_the_store_it_points_at(tmp_path):
    """Written through a link, a store was left as it was: the link was replaced by a new link file, and new
    cells went to a cell folder beside the link that the store never reads."""
    shared, mine = tmp_path / "shared" / "store.h5", tmp_path / "me" / "store.h5"
    shared.parent.mkdir()
    mine.parent.mkdir()
    Store(shared).write([make_cell("E001"), make_cell("E002", seed=2)])
    mine.symlink_to(Path("..") / "shared" / "store.h5")
    Store(mine).remove(["E001"])
    Store(mine).write([make_cell("E003", seed=3)])
    assert Store(shared).cell_names() == ["E002", "E003"] == Store(mine).cell_names()
    assert mine.is_symlink() and sorted(p.name for p in mine.parent.iterdir()) == ["store.h5"]
    result = run_cli("store", "rm", "E002", "--store", mine)
    assert result.code == 0, result.stderr
    assert Store(shared).cell_names() == ["E003"]
    # A link to a pipe (bash's /dev/fd/63 is one) is refused as a pipe, not followed to the kernel's pipe:[inode].
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "to-fifo").symlink_to(tmp_path / "fifo")
    assert_one_line_error(run_cli("store", "list", "--store", tmp_path / "to-fifo"),
                          f"store {tmp_path / 'to-fifo'}: is a device or pipe, not a store file")


def test_a_cell_whose_file_is_missing_or_damaged_is_left_out_of_the_list_and_removed_by_rm(tmp_path):
    """One lost or damaged cell file made `store list` fail for every cell (so a loop over its cells ran zero
    times) and `store rm` fail for that cell, the one command that could clear it."""
    path = tmp_path / "s.h5"
    Store(path).write([make_cell("E001"), make_cell("E002", seed=2), make_cell("E003", seed=3)])
    cells = Store(path).cells_dir
    next(cells.glob("E002.*")).unlink()
    next(cells.glob("E003.*")).write_bytes(b"junk")
    listed = run_cli("store", "list", "--store", path, "-f", "tsv")
    assert listed.code == 0, listed.stderr
    assert [row["cell"] for row in parse_tsv(listed.stdout)] == ["E001"]
    notes = [line for line in listed.stderr.splitlines() if line.startswith("histcli: note: left out")]
    assert len(notes) == 2 and "cell 'E002'" in notes[0] and "is missing" in notes[0] and "cell 'E003'" in notes[1]
    removed = run_cli("store", "rm", "E002", "E003", "--store", path, "-f", "tsv")
    assert removed.code == 0, removed.stderr
    assert [(row["cell"], row["genes"]) for row in parse_tsv(removed.stdout)] == [("E002", "NA"), ("E003", "NA")]
    assert removed.stderr.count("histcli: note: removing an unreadable cell") == 2
    assert Store(path).cell_names() == ["E001"]
    clean = run_cli("store", "list", "--store", path, "-f", "tsv")
    assert clean.code == 0 and clean.stderr == "" and [row["cell"] for row in parse_tsv(clean.stdout)] == ["E001"]
    # A cell that is not stored at all is still an error for rm.
    assert_one_line_error(run_cli("store", "rm", "E009", "--store", path), "no cell 'E009'")
