"""Helpers for the benchmarks: timing, memory of a fresh interpreter, data locations."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MARKS = ("H3K4me3", "H3K4me1", "H3K36me3", "H3K9me3", "H3K27me3")


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        sys.exit(f"skipped: real data {name} not found at {path} (../shared/data beside the repository)")
    return path


def timed(function, repeat: int = 3) -> tuple[float, object]:
    """Median wall time of ``repeat`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _environment(env: dict | None = None) -> dict:
    environment = {**os.environ, **(env or {})}
    # Commands run from cached bytecode, as an installed package does (pip compiles it at install);
    # PYTHONDONTWRITEBYTECODE, set on some machines, would add recompiling histcli to every start-up.
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    return environment


def run(args: list, env: dict | None = None, stdin: str | None = None) -> tuple[float, str]:
    """Run a command to completion; returns (wall seconds, stdout). A failure ends the benchmark."""
    start = time.perf_counter()
    process = subprocess.run([str(a) for a in args], env=_environment(env), input=stdin, capture_output=True,
                             text=True)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))} failed:\n{process.stderr}")
    return wall, process.stdout


def histcli(*args) -> list[str]:
    return [sys.executable, "-m", "histcli", *map(str, args)]


def peak_rss_mib(code: str, env: dict | None = None) -> float:
    """Peak resident memory (MiB) of a fresh interpreter running ``code``, as it reports it itself.

    VmHWM is read rather than ru_maxrss, which a child inherits from its parent at fork.
    """
    wrapper = (code + "\nimport re, sys\n"
               "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
               "print('PEAK', int(hwm) / 1024, file=sys.stderr)")
    process = subprocess.run([sys.executable, "-c", wrapper], env={**os.environ, **(env or {})},
                             capture_output=True, text=True)
    if process.returncode != 0:
        sys.exit(process.stderr)
    return float(process.stderr.strip().splitlines()[-1].split()[1])


def cli_code(*args) -> str:
    """Python code that runs the histcli command line with ``args`` inside the current interpreter."""
    argv = ["histcli", *map(str, args)]
    # The app itself: the entry point ends the process without returning to the caller's code.
    return (f"import sys\nsys.argv = {argv!r}\nfrom histcli.cli.app import app\n"
            "try:\n    app(prog_name='histcli')\n"
            "except SystemExit as exit:\n    assert not exit.code, exit.code")


def fresh_seconds(setup: str, timed: str) -> float:
    """Seconds ``timed`` takes in a fresh interpreter that has run ``setup`` (imports) first: work
    without start-up, with histcli and its baselines on an equal footing (a baseline timed inside
    the benchmark's own long-lived process varied by up to 50% between runs)."""
    code = (f"import sys, time\nsys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n{setup}\n"
            f"start = time.perf_counter()\n{timed}\nprint('SECONDS', time.perf_counter() - start, file=sys.stderr)")
    process = subprocess.run([sys.executable, "-c", code], env=_environment(), capture_output=True, text=True)
    if process.returncode != 0:
        sys.exit(process.stderr)
    return float(process.stderr.strip().splitlines()[-1].split()[1])


def cli_seconds(*args, imports: str = "") -> float:
    """Seconds one command takes in a fresh interpreter that has already imported the app and
    ``imports`` (e.g. "import pandas, h5py"): the command's own work, without start-up."""
    return fresh_seconds(f"{imports}\nimport histcli.cli.app", cli_code(*args))


def report(label: str, value: float, baseline: float, unit: str = "s", goal: str = "") -> None:
    ratio = value / baseline if baseline else float("nan")
    line = f"{label:<46} {value:9.3f} {unit:<3} baseline {baseline:9.3f} {unit:<3} ratio {ratio:5.2f}"
    print(line + (f"  (goal: {goal})" if goal else ""), flush=True)
