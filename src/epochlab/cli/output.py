"""Where the CLI prints: the consoles and the one-line warning (no torch: ``epochlab runs``
and ``report`` import only this, the store and rich)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

# Piped or captured output (CI logs, files) gets 120 columns rather than
# rich's 80, so the result tables are not squeezed into ellipses.
_probe = Console()
console = Console(highlight=False, width=None if _probe.is_terminal else max(_probe.width, 120))
err_console = Console(stderr=True, highlight=False)


def warn(message: str) -> None:
    """One warning line on stderr (yellow on a terminal): the command goes on."""
    err_console.print(f"[yellow]Warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
