"""The README stays true: a two-command quickstart that CI runs, and recipes that work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import REPO, parse_tsv, run_cli

from histcli.store import Store

README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, flags=re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_quickstart_is_two_commands_and_ci_runs_the_test_command():
    blocks = bash_blocks(section("Quickstart"))
    commands = [line for block in blocks for line in block.strip().splitlines()]
    assert len(commands) == 2
    install_and_demo, install_and_test = commands
    assert "constraints.txt" in install_and_demo and install_and_demo.endswith("histcli demo")
    assert "constraints.txt" in install_and_test and "pytest" in install_and_test
    assert install_and_test in (REPO / ".ci" / "run").read_text()
    assert (REPO / "constraints.txt").read_text().split() == ["torch==2.13.0"]


def test_recipes_run_on_simulated_data(tmp_path):
    store, models = tmp_path / "store.h5", tmp_path / "models"
    env = {**os.environ, "HISTCLI_STORE": str(store), "HISTCLI_MODELS": str(models), "EPOCHS": "2",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    assert run_cli("prepare", "simulate", "--cells", 3, "--genes", 600, "--bins", 20, "-q",
                   env={"HISTCLI_STORE": str(store)}).code == 0
    cell = Store(store).load("sim02", splits=["test"])
    lines = ["gene_id\tbin\t" + "\t".join(cell.marks)]
    for gene, matrix in zip(cell.gene_ids[:25], cell.counts[:25], strict=True):
        lines += [f"{gene}\t{b}\t" + "\t".join(map(str, row)) for b, row in enumerate(matrix.tolist(), start=1)]
    (tmp_path / "my_genes.tsv").write_text("\n".join(lines) + "\n")

    script = "set -euo pipefail\n" + "\n".join(bash_blocks(section("Recipes")))
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    for arch in ("crnn", "deepchrome", "logistic"):
        assert sorted(p.name for p in (models / arch).iterdir() if not p.name.startswith(".")) == [
            "sim01", "sim02", "sim03"]
    evaluation = parse_tsv((tmp_path / "evaluation.tsv").read_text())
    assert len(evaluation) == 9
    means = dict(line.split("\t") for line in result.stdout.splitlines()[:3])
    for model in ("crnn", "deepchrome", "logistic"):
        expected = np.mean([float(r["auc"]) for r in evaluation if r["model"] == model])
        assert abs(float(means[model]) - expected) < 1e-4
    assert len(parse_tsv((tmp_path / "per-cell.tsv").read_text())) == 3
    summary = result.stdout.splitlines()[3:5]
    assert summary[0].split("\t") == ["model_a", "model_b", "n_cells", "wins", "ties", "losses", "wilcoxon_p"]
    predictions = parse_tsv((tmp_path / "predictions.tsv").read_text())
    assert [p["gene_id"] for p in predictions] == list(cell.gene_ids[:25])
    expressed = sum(p["prediction"] == "1" for p in predictions)
    assert result.stdout.splitlines()[-1].strip() == str(expressed)
