"""Shared test helpers: the real-data folder and running the installed command line."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """A folder of real REMC excerpts from ../shared/data, or skip the test."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data {name} not found at {path} (../shared/data beside the repository)")
    return path


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_cli(*args, cwd=None, env=None, stdin: str | None = None, timeout: float = 600) -> Result:
    """Run `python -m histcli ARGS` in a subprocess, like a user's shell would."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    full_env.pop("HISTCLI_STORE", None)
    full_env.pop("HISTCLI_MODELS", None)
    full_env.update(env or {})
    process = subprocess.run(
        [sys.executable, "-m", "histcli", *map(str, args)],
        cwd=cwd,
        env=full_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    # What pytest's filterwarnings cannot see: a Python warning printed by the command itself.
    shown = re.findall(r"^\S+:\d+: \w*Warning: .*$", process.stderr, flags=re.M)
    assert not shown, f"histcli {' '.join(map(str, args))} printed a warning: {shown[0]}"
    return Result(process.returncode, process.stdout, process.stderr)


def copy_store(source: Path, target: Path) -> None:
    """Copy a store: its link file and the folder of cell files beside it."""
    shutil.copy(source, target)
    shutil.copytree(Path(f"{source}.cells"), Path(f"{target}.cells"))


@contextlib.contextmanager
def stalled_at_commit(action: str):
    """Run ``action`` (Python code using ``store_module``, i.e. histcli.store) in a subprocess that stops
    when a commit is about to fsync its new link file; the block runs then, and the process is killed
    with SIGKILL as the block ends."""
    script = (
        "import time\n"
        "import histcli.store as store_module\n"
        "def stalled(path):\n"
        "    print('COMMITTING', flush=True)\n"
        "    time.sleep(600)\n"
        "store_module.fsync_file = stalled\n"
        f"{action}\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "COMMITTING"
        yield process
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def assert_one_line_error(result: Result, *fragments: str, code: int = 1) -> None:
    """A failure reported as one line on stderr, without a traceback, naming the fragments."""
    assert result.code == code, (result.code, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("histcli: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def assert_plot_covers_every_pair(svg: Path, payload: dict, cell: str | None = None,
                                  genes: int | None = None) -> None:
    """`compare --plot`'s SVG against `compare -f json`'s payload: one row per pair, in the pairs' order, with
    the pair's cells of a defined metric as points (SVG group pair<i>-cells) and, for ``cell`` (default: the
    pair's largest |difference|, found here from the JSON), each model's ROC curve (AUC) or its ``genes``
    predicted-against-measured points (correlations) in groups pair<i>-a and pair<i>-b, titled with the cell
    and labelled with the model's value from the JSON."""
    import html
    import xml.etree.ElementTree as ET

    from histcli.comparison import METRIC_LABELS

    metric, svg_ns = payload["metric"], "{http://www.w3.org/2000/svg}"
    blocks = payload.get("pairs") or [{"model_a": payload["models"][0], "model_b": payload["models"][1],
                                       "cells": payload["cells"]}]
    text = svg.read_text()
    groups = {g.get("id"): g for g in ET.fromstring(text).iter(f"{svg_ns}g") if g.get("id", "").startswith("pair")}
    # matplotlib writes each text drawn as glyphs after a comment holding the text itself.
    texts = [html.unescape(t).replace("\xa0", " ") for t in re.findall(r"<!-- (.*?) -->", text)]
    expected_groups, titles, legends = set(), [], []
    for index, block in enumerate(blocks):
        keys = {model: f"{metric}_{model}" for model in (block["model_a"], block["model_b"])}
        defined = [row for row in block["cells"] if all(row[key] is not None for key in keys.values())]
        chosen = cell or max(defined, key=lambda row: abs(row[f"delta_{metric}"] or 0))["cell"]
        values = next(row for row in defined if row["cell"] == chosen)
        assert len(groups[f"pair{index}-cells"].findall(f".//{svg_ns}use")) == len(defined)
        for side in "ab":
            drawn = groups[f"pair{index}-{side}"]
            if metric == "auc":
                assert len(drawn.findall(f".//{svg_ns}path")) == 1  # the ROC curve
            else:
                assert len(drawn.findall(f".//{svg_ns}use")) == genes
        expected_groups |= {f"pair{index}-cells", f"pair{index}-a", f"pair{index}-b"}
        titles.append(f"{'ROC' if metric == 'auc' else 'predicted vs measured'}, {chosen}")
        legends += [f"{model} ({METRIC_LABELS[metric]} {values[key]:.3f})" for model, key in keys.items()]
    assert set(groups) == expected_groups
    assert [t for t in texts if t.startswith(("ROC, ", "predicted vs measured, "))] == titles
    assert [t for t in texts if re.fullmatch(r".+ \((AUC|Pearson r|Spearman rho) -?[0-9.]+\)", t)] == legends


def parse_tsv(text: str) -> list[dict]:
    lines = text.strip("\n").split("\n")
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


@dataclass
class Workspace:
    """A store of simulated cells with trained models, shared by the command tests."""

    folder: Path
    store: Path
    models: Path

    def run(self, *args, env_extra: dict | None = None, **kwargs) -> Result:
        env = {"HISTCLI_STORE": str(self.store), "HISTCLI_MODELS": str(self.models), **(env_extra or {})}
        return run_cli(*args, env=env, **kwargs)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    """Three simulated cells (900 genes x 20 bins) with logistic and deepchrome trained on each."""
    folder = tmp_path_factory.mktemp("workspace")
    ws = Workspace(folder, folder / "store.h5", folder / "models")
    result = ws.run("prepare", "simulate", "--cells", 3, "--genes", 900, "--bins", 20, "--seed", 11, "-q")
    assert result.code == 0, result.stderr
    for arch in ("logistic", "deepchrome"):
        result = ws.run("train", "--all-cells", "--arch", arch, "--epochs", 4, "--device", "cpu", "-q")
        assert result.code == 0, result.stderr
    return ws


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> dict:
    """Environment naming a store with one simulated cell (sim01, 60 genes x 4 bins) and a logistic
    model trained on it for two epochs: enough for ``predict`` to run (a few seconds)."""
    folder = tmp_path_factory.mktemp("tiny")
    env = {"HISTCLI_STORE": str(folder / "s.h5"), "HISTCLI_MODELS": str(folder / "models")}
    assert run_cli("prepare", "simulate", "--cells", 1, "--genes", 60, "--bins", 4, "-q", env=env).code == 0
    result = run_cli("train", "--all-cells", "--arch", "logistic", "--epochs", 2, "--threads", 1,
                     "--device", "cpu", "-q", env=env)
    assert result.code == 0, result.stderr
    return env
