"""The ``epochlab`` command: one click group, one module per subcommand.

Each subcommand module defines a click command; this package only gathers
them, so commands can be written and tested independently.
"""

from __future__ import annotations

import click

from epochlab import __version__
from epochlab.cli.batch_size import batch_size_command
from epochlab.cli.fit import fit_command
from epochlab.cli.lr_find import lr_find_command
from epochlab.cli.report import report_command
from epochlab.cli.runs import runs_command
from epochlab.cli.sweep import sweep_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="epochlab")
def main() -> None:
    """epochlab: how many epochs, which batch size, which learning rate.

    Every command trains PyTorch models with exact epoch and iteration
    accounting and writes what it found to files you can open.
    """


main.add_command(fit_command)
main.add_command(runs_command)
main.add_command(sweep_command)
main.add_command(report_command)
main.add_command(lr_find_command)
main.add_command(batch_size_command)

__all__ = ["main"]
