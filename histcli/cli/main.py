"""Entry point: run the Typer app and turn errors into one line and an exit code."""

from __future__ import annotations

import os
import sys

# torch's OpenMP threads (GNU libgomp on Linux) spin for a long while when they wait for work. Two
# processes side by side (xargs -P, `&` in a loop, a cluster node shared by jobs) then burn each other's
# cores: on 2 cores two 2-thread CRNN trainings took 33-76 s instead of 11 s. A short spin before sleeping
# (set before torch is imported) costs one process alone 6-25%, most with small batches (bench/bench_threads.py).
OPENMP_SPIN = ("GOMP_SPINCOUNT", "1000")


def main() -> None:
    os.environ.setdefault(*OPENMP_SPIN)  # a user's own setting wins
    try:
        from histcli import interrupt

        interrupt.install()
        from histcli.cli.app import app
        from histcli.errors import EXIT_PIPE_CLOSED, StdoutClosed, describe
    except KeyboardInterrupt:  # Ctrl-C while still starting up
        sys.exit(130)

    try:
        app(prog_name="histcli")
    except SystemExit as done:  # how click ends every command, successful or not
        code = done.code
    except KeyboardInterrupt:  # outside a command (typer maps those to 130 itself)
        code = 130
    except StdoutClosed:
        # The reader (e.g. `head -1`) has all it wanted; stop quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_PIPE_CLOSED
    except Exception as exc:  # noqa: BLE001 - mapped to a message below, or re-raised as a bug
        message, code = describe(exc)
        if code < 0:
            raise
        print(f"histcli: error: {message}", file=sys.stderr)
    else:
        code = 0
    exit_skipping_teardown(code)


def exit_skipping_teardown(code: object) -> None:
    """Exit with ``code``, skipping the interpreter's teardown when torch is loaded.

    Tearing torch down takes 0.3-0.7 s, a large part of a short ``predict`` or
    ``evaluate`` run in a loop over cells. By now the command has finished:
    every file it wrote is closed and renamed into place (stores, registry
    entries and outputs go through context managers), so only the standard
    streams and logging need flushing.
    """
    from histcli.errors import EXIT_PIPE_CLOSED

    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = code or EXIT_PIPE_CLOSED
    if "torch" not in sys.modules:
        sys.exit(code)
    if code is not None and not isinstance(code, int):  # sys.exit(message): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    import logging

    logging.shutdown()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    main()
