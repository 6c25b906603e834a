"""Start-up of `histcli --help` and of a completion request against `python -c pass`, same run.

Goal: `histcli --help` at most 0.3 s, or at most 3x `python -c pass`.

Usage: python bench/bench_startup.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report, run, timed  # noqa: E402


def main() -> None:
    program = shutil.which("histcli")
    command = [program] if program else [sys.executable, "-m", "histcli"]
    python, _ = timed(lambda: run([sys.executable, "-c", "pass"]), repeat=7)
    help_time, _ = timed(lambda: run([*command, "--help"]), repeat=7)
    predict_help, _ = timed(lambda: run([*command, "predict", "--help"]), repeat=7)
    completion = {"COMP_WORDS": "histcli train --arch ", "COMP_CWORD": "3", "_HISTCLI_COMPLETE": "complete_bash"}
    complete, _ = timed(lambda: run(command, env=completion), repeat=7)
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "store.h5"
        run([*command, "prepare", "simulate", "--cells", 56, "--genes", 100, "--bins", 4, "--store", store, "-q"])
        cells = {"COMP_WORDS": "histcli train --cell ", "COMP_CWORD": "3", "_HISTCLI_COMPLETE": "complete_bash",
                 "HISTCLI_STORE": str(store)}
        complete_cells, names = timed(lambda: run(command, env=cells), repeat=7)
    assert len(names[1].split()) == 56
    print(f"program: {' '.join(command)}")
    report("histcli --help", help_time, python, goal="<= 0.3 s or <= 3x")
    report("histcli predict --help", predict_help, python)
    report("completion of --arch", complete, python)
    report("completion of --cell (56 cells in the store)", complete_cells, python)


if __name__ == "__main__":
    os.environ.pop("HISTCLI_STORE", None)
    main()
