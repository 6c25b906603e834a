"""Entry point: run the Typer app and turn errors into one line and an exit code."""

from __future__ import annotations

import os
import sys


def main() -> None:
    try:
        from histcli import interrupt

        interrupt.install()
        from histcli.cli.app import app
        from histcli.errors import EXIT_PIPE_CLOSED, StdoutClosed, describe
    except KeyboardInterrupt:  # Ctrl-C while still starting up
        sys.exit(130)

    try:
        app(prog_name="histcli")
    except KeyboardInterrupt:  # outside a command (typer maps those to 130 itself)
        sys.exit(130)
    except StdoutClosed:
        # The reader (e.g. `head -1`) has all it wanted; stop quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_PIPE_CLOSED)
    except Exception as exc:  # noqa: BLE001 - mapped to a message below, or re-raised as a bug
        message, code = describe(exc)
        if code < 0:
            raise
        print(f"histcli: error: {message}", file=sys.stderr)
        sys.exit(code)


if __name__ == "__main__":
    main()
