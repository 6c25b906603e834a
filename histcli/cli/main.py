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
        from histcli.errors import EXIT_PIPE_CLOSED, EXIT_USAGE, StdoutClosed, describe
    except KeyboardInterrupt:  # Ctrl-C while still starting up
        sys.exit(130)

    import typer

    click = click_exceptions()
    try:
        # Not standalone: click's own usage errors come back here, to be said in one line like ours.
        code = app(prog_name="histcli", standalone_mode=False) or 0
    except SystemExit as done:  # shell completion, or a command that exits itself
        code = done.code
    except getattr(click, "NoArgsIsHelpError", ()) as shown:  # `histcli store`: its help (click >= 8.2)
        if app.rich_markup_mode is None:  # on a terminal typer has already printed the rich help
            shown.show()
        code = shown.exit_code
    except click.ClickException as failed:
        print(f"histcli: error: {click_message(failed)}", file=sys.stderr)
        code = failed.exit_code
    except typer.Abort:  # end of input at a prompt
        code = 1
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
        if code == EXIT_USAGE and getattr(exc, "about_an_option", True):
            # Options that cannot work together, found by the command: its help as for click's.
            message = with_help_hint(message, command_context(exc))
        print(f"histcli: error: {message}", file=sys.stderr)
    exit_skipping_teardown(code)


def click_exceptions():
    """The module of the click exceptions typer raises: click's, or from typer 0.28 on its own copy of click."""
    import typer

    return sys.modules[typer.BadParameter.__module__]


def click_message(failed) -> str:
    """Click's message for a bad command line (unknown option, invalid value, missing argument), in one
    line with where the command's help is, instead of click's usage, hint and error block."""
    return with_help_hint(" ".join(failed.format_message().split()).removesuffix("."), command_context(failed))


def with_help_hint(message: str, context) -> str:
    """``message`` and where the help of the (sub)command of ``context`` is: "(see 'histcli store show -h')"."""
    if context is None:
        return message
    return f"{message} (see '{context.command_path} {context.help_option_names[0]}')"


def command_context(exc: BaseException):
    """The click context of the (sub)command whose command line ``exc`` rejects, or None. Click attaches it to
    most of its errors but not to some of its parser's (an option without its value, a flag given one), and
    histcli's own usage errors, raised as a command runs, have none: then it is the innermost ``ctx`` that the
    exception passed through (the parser's or the command's invocation)."""
    context = getattr(exc, "ctx", None)
    if context is not None:
        return context
    frame = exc.__traceback__
    while frame is not None:
        found = frame.tb_frame.f_locals.get("ctx")
        if hasattr(found, "command_path"):  # a click context, not some other ``ctx``; the innermost wins
            context = found
        frame = frame.tb_next
    return context


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
