"""Start-up of `histcli --help` and of a completion request against `python -c pass`, same run.

Goal: `histcli --help` at most 0.3 s, or at most 3x `python -c pass`.

Usage: python bench/bench_startup.py
"""

from __future__ import annotations

import os
import shutil
import sys
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
    print(f"program: {' '.join(command)}")
    report("histcli --help", help_time, python, goal="<= 0.3 s or <= 3x")
    report("histcli predict --help", predict_help, python)
    report("completion of --arch", complete, python)


if __name__ == "__main__":
    os.environ.pop("HISTCLI_STORE", None)
    main()
