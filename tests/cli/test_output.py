"""The CLI's tables print as rich prints them, laid out by epochlab when they are plain."""

from __future__ import annotations

import io
import random
import re

import pytest
from rich.console import Console
from rich.table import Table

from epochlab.cli.output import _plain_layout, print_table

WORDS = ["1", "10 *", "0.1", "0.0001", "completed", "early_stopped", "", "run 3", "0.8688 (22)",
         "exponential:decay_steps=1000", "on", "off", "1000", "数据", "é"]


def _table(rng: random.Random, title: str | None) -> Table:
    table = Table(show_edge=False, pad_edge=False, title=title)
    for i in range(rng.randint(1, 8)):
        table.add_column(rng.choice(WORDS + [f"col {i}", "best (n)", "test acc"]),
                         justify=rng.choice(["right", "left"]))
    for _ in range(rng.randint(0, 12)):
        table.add_row(*(rng.choice(WORDS) for _ in table.columns))
    return table


def _printed(table: Table, fast: bool, terminal: bool, width: int) -> str:
    con = Console(file=io.StringIO(), width=width, force_terminal=terminal, highlight=False,
                  color_system="truecolor" if terminal else None)
    print_table(table, con) if fast else con.print(table)
    return con.file.getvalue()


@pytest.mark.parametrize("terminal", [False, True])
def test_plain_tables_print_as_rich_prints_them(terminal):
    rng = random.Random(0)
    laid_out = 0
    for n in range(300):
        title = rng.choice([None, "val_accuracy: final = at the weights kept", "x", "数据 (n)"])
        table, width = _table(rng, title), rng.choice([40, 80, 120])
        con = Console(file=io.StringIO(), width=width)
        laid_out += _plain_layout(table, con, width) is not None
        ours, rich = _printed(table, True, terminal, width), _printed(table, False, terminal, width)
        if terminal:  # the same characters, the header bold and the title italic
            plain = re.compile(r"\x1b\[[0-9;]*m")
            assert plain.sub("", ours) == plain.sub("", rich), n
            assert ("\x1b[1m" in ours) == ("\x1b[1m" in rich) and ("\x1b[3m" in ours) == ("\x1b[3m" in rich)
        else:
            assert ours == rich, n
    assert laid_out > 100  # 129 of 300 took the fast path; the rest (too wide, long titles) rich


def test_what_it_does_not_know_is_left_to_rich():
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("status")
    table.add_row("[red]diverged[/]")  # markup: rich's to interpret
    con = Console(file=io.StringIO(), width=80)
    assert _plain_layout(table, con, 80) is None
    print_table(table, con)
    assert "diverged" in con.file.getvalue() and "[red]" not in con.file.getvalue()
    boxed = Table(title="edged")  # rich's default outer edge
    boxed.add_column("a")
    assert _plain_layout(boxed, con, 80) is None
    wide = Table(show_edge=False, pad_edge=False)
    wide.add_column("a")
    wide.add_row("x" * 100)  # wider than the console: rich wraps it
    assert _plain_layout(wide, con, 80) is None
