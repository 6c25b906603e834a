"""`histcli demo`: the whole workflow with default settings, every model converged."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, run_cli


@pytest.mark.slow
@pytest.mark.timeout(2400)  # under a minute on two idle cores; far more on a busy machine
def test_demo_trains_every_model_to_convergence(tmp_path):
    folder = tmp_path / "demo"
    result = run_cli("demo", "--dir", folder, timeout=3000)
    assert result.code == 0, result.stderr[-2000:]
    assert "did not converge" not in result.stderr
    listed = run_cli("models", "list", "--models", folder / "models", "-f", "json")
    rows = json.loads(listed.stdout)
    assert sorted((row["arch"], row["cell"]) for row in rows) == sorted(
        (arch, f"sim{i:02d}") for arch in ("crnn", "deepchrome", "logistic") for i in range(1, 5))
    for row in rows:
        assert row["converged"] is True, row
        assert row["best_epoch"] < 1000  # never the cap
    # The tables it prints include the comparison of the three models over the four cells.
    assert "crnn" in result.stdout and "delong_p" in result.stdout


def test_demo_on_cuda_without_cuda_fails_before_removing_the_earlier_demo(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    earlier = tmp_path / "models" / "kept"
    earlier.mkdir(parents=True)
    result = run_cli("demo", "--dir", tmp_path, "--cells", 2, "--genes", 30, "--bins", 14, "--epochs", 1,
                     "--device", "cuda")
    assert_one_line_error(result, "--device 'cuda': no CUDA device is available", code=2)
    assert earlier.is_dir() and not (tmp_path / "store.h5").exists()
    assert result.stdout == ""
