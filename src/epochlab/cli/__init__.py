"""The ``epochlab`` command: one click group, one module per subcommand, one error policy.

Each subcommand module defines a click command; this package gathers them
and owns how every command ends when something goes wrong, so a new command
gets the same behaviour for free:

- a bad parameter (:class:`~epochlab.validation.ParameterError`, or a click
  usage error such as an unknown option) is one line on stderr and exit 2;
- Ctrl-C is one line and exit 130 (commands record what was in flight as
  interrupted before that);
- any other failure is one line saying what happened and what to do, exit 1.

No traceback is printed unless ``EPOCHLAB_DEBUG=1`` is set, in which case
the original exception is raised as it is.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import click

from epochlab import __version__
from epochlab._lazy import attach as _lazy_attach
from epochlab.validation import ParameterError

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

# The subcommands, imported when one is run (torch, scikit-learn and matplotlib take ~2 s
# to load): name -> (module, attribute, the first paragraph of its help, which
# `epochlab --help` lists without importing it; a test keeps it equal to the command's).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "batch-size": ("epochlab.cli.batch_size", "batch_size_command",
                   "Measure the gradient noise scale B_simple per epoch and turn it into "
                   "batch-size advice."),
    "fit": ("epochlab.cli.fit", "fit_command",
            "Train one model and print the accounting, a per-epoch table, advice and test "
            "metrics."),
    "lr-find": ("epochlab.cli.lr_find", "lr_find_command",
                "Raise the learning rate exponentially on copies of the model and suggest one."),
    "report": ("epochlab.cli.report", "report_command",
               "Write heatmap.png, curves_<setting>.png and results.csv for a study; print the "
               "best run."),
    "runs": ("epochlab.cli.runs", "runs_command",
             "List stored runs: settings, final validation metrics, updates, seconds."),
    "sweep": ("epochlab.cli.sweep", "sweep_command",
              "Train every combination of the given settings and report the best."),
    "tour": ("epochlab.cli.tour", "tour_command",
             "Run every slide of the seed (15 sections) and write OUT/index.html."),
    "tune": ("epochlab.cli.tune", "tune_command",
             "Search settings with Optuna; the pruner decides how many epochs each trial "
             "deserves."),
}


def debug_enabled() -> bool:
    """True when ``EPOCHLAB_DEBUG`` asks for tracebacks (any value but '', '0', 'false', 'no')."""
    return os.environ.get("EPOCHLAB_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def one_line(text: str) -> str:
    """``text`` on one line: its lines joined with spaces, blank ones dropped.

    Example:
        >>> one_line("Could not download x:\\n  mirror 1: refused\\n")
        'Could not download x: mirror 1: refused'
    """
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def failure_message(exc: BaseException) -> str:
    """What happened and what to do, for an exception that is not the user's bad parameter."""
    from epochlab.store import StoreError

    text = one_line(str(exc))
    if isinstance(exc, StoreError):
        return text
    import sqlite3

    if isinstance(exc, sqlite3.DatabaseError):
        if "malformed" in text or "not a database" in text:  # the store's file, damaged
            from epochlab.store.sqlite import damaged_message

            return damaged_message(None, exc)
        return (f"The store could not be read or written ({text}): free disk space, check that "
                "its file and folder may be written, then run the command again.")
    if isinstance(exc, (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        return (f"{exc.strerror or type(exc).__name__}:{where}. Check that the path exists and "
                "that you may write there, or choose another one.")
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        return f"{exc.strerror}:{where}. Free space or fix the path, then run the command again."
    if isinstance(exc, MemoryError):
        return ("Out of memory. Use a smaller --batch-size or model, fewer --workers, "
                "or a smaller dataset.")
    if type(exc).__name__ in ("DownloadError", "ChecksumError"):
        return text
    return (f"{type(exc).__name__}: {text or '(no message)'}. This is a failure, not a mistake in "
            "the command: if it comes from your own model or data code, fix it there; otherwise "
            "it is a bug in epochlab. Run again with EPOCHLAB_DEBUG=1 to see the traceback.")


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, file: Any = None, line: str | None = None) -> None:
    click.echo(f"Warning: {one_line(str(message))}", err=True)


class _PipeSafe:
    """A standard stream whose reader may go away (``epochlab sweep ... | head``): the first
    write that finds the pipe closed points the stream's file at /dev/null, and the command
    goes on (training and storing) without its printed output, instead of failing there."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _closed(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _survive_closed_pipes() -> dict[str, Any]:
    """Wrap sys.stdout and sys.stderr in :class:`_PipeSafe`; the streams replaced, to put
    back when the command ends (an in-process call leaves them as it found them)."""
    replaced = {}
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _PipeSafe):
            replaced[name] = stream
            setattr(sys, name, _PipeSafe(stream))
    return replaced


class EpochlabGroup(click.Group):
    """A click group that applies the package's error policy around every command, and
    imports a subcommand (:data:`COMMANDS`) only when it runs or shows its own help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute, _ = COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``epochlab --help``, as click writes it, from :data:`COMMANDS`."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in COMMANDS:
                text = click.utils.make_default_short_help(COMMANDS[name][2], limit)
            else:
                text = self.commands[name].get_short_help_str(limit)
            rows.append((name, text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        name = "epochlab"  # in messages, whatever name the process was started under
        if not standalone_mode or debug_enabled():
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        restore = _survive_closed_pipes()
        try:
            try:
                with warnings.catch_warnings():
                    warnings.showwarning = _one_line_warning
                    rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            except ParameterError as e:
                self._usage(argv, name, str(e))
            except click.UsageError as e:
                self._usage(argv, name, e.format_message())
            except click.exceptions.Abort:  # click's form of KeyboardInterrupt / EOF
                click.echo("Interrupted (Ctrl-C).", err=True)
                sys.exit(EXIT_INTERRUPTED)
            except KeyboardInterrupt:
                click.echo("Interrupted (Ctrl-C).", err=True)
                sys.exit(EXIT_INTERRUPTED)
            except click.ClickException as e:
                click.echo(f"Error: {one_line(e.format_message())}", err=True)
                sys.exit(e.exit_code)
            except (SystemExit, click.exceptions.Exit):
                raise
            except Exception as e:  # noqa: BLE001 - every other failure: one line, exit 1
                click.echo(f"Error: {failure_message(e)}", err=True)
                sys.exit(EXIT_FAILURE)
            # With standalone_mode=False click returns the exit code of --help/--version.
            sys.exit(rv if isinstance(rv, int) else 0)
        finally:
            for stream_name, stream in restore.items():
                getattr(sys, stream_name).flush()  # a closed pipe is found here, not at exit
                setattr(sys, stream_name, stream)

    def _usage(self, argv: list[str], prog: str, message: str) -> None:
        command = next((a for a in argv if a in self.commands or a in COMMANDS), None)
        where = f"{prog} {command}" if command else prog
        click.echo(f"Error: {one_line(message)} (see '{where} --help')", err=True)
        sys.exit(EXIT_USAGE)


@click.group(cls=EpochlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="epochlab")
def main() -> None:
    """epochlab: how many epochs, which batch size, which learning rate.

    Every command trains PyTorch models with exact epoch and iteration
    accounting and writes what it found to files you can open.
    Bad options exit 2 with one line saying which; other failures exit 1;
    Ctrl-C exits 130. Set EPOCHLAB_DEBUG=1 to see tracebacks.
    """


__all__ = ["COMMANDS", "EpochlabGroup", "failure_message", "main", "one_line"]

# Submodules load on first use as attributes too (`el.cli.<module>`), as when the package
# imported them all.
__getattr__, __dir__ = _lazy_attach(__name__, {})
