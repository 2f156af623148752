"""The CLI's tables print as rich prints them, laid out by epochlab when they are plain."""

from __future__ import annotations

import io
import random
import re

import pytest
from rich.console import Console
from rich.table import Table

from epochlab.cli.output import _literal, _plain_layout, print_table

WORDS = ["1", "10 *", "0.1", "0.0001", "completed", "early_stopped", "", "run 3", "0.8688 (22)",
         "exponential:decay_steps=1000", "on", "off", "1000", "数据", "é", "[bold]x[/]", "a[/b]",
         ":smile:", "exp[2].csv"]


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
    if fast:
        print_table(table, con)
    else:  # rich itself, the cells as plain text
        _literal(table)
        con.print(table)
    return con.file.getvalue()


@pytest.mark.parametrize("terminal", [False, True])
def test_plain_tables_print_as_rich_prints_them(terminal):
    rng = random.Random(0)
    laid_out = 0
    for n in range(300):
        title = rng.choice([None, "val_accuracy: final = at the weights kept", "x", "数据 (n)"])
        seed, width = rng.random(), rng.choice([40, 80, 120])
        con = Console(file=io.StringIO(), width=width)
        laid_out += _plain_layout(_table(random.Random(seed), title), con, width) is not None
        ours = _printed(_table(random.Random(seed), title), True, terminal, width)
        rich = _printed(_table(random.Random(seed), title), False, terminal, width)
        if terminal:  # the same characters, the header bold and the title italic
            plain = re.compile(r"\x1b\[[0-9;]*m")
            assert plain.sub("", ours) == plain.sub("", rich), n
            assert ("\x1b[1m" in ours) == ("\x1b[1m" in rich) and ("\x1b[3m" in ours) == ("\x1b[3m" in rich)
        else:
            assert ours == rich, n
    assert laid_out > 100  # 129 of 300 took the fast path; the rest (too wide, long titles) rich


def test_cells_are_shown_as_written_not_read_as_markup():
    # A study named "[bold]x" or "a[/b]", or a setting ":smile:": rich would restyle the first,
    # fail on the second ("closing tag doesn't match") and draw an emoji for the third.
    for width in (80, 20):  # laid out here, and (too wide) by rich
        table = Table(show_edge=False, pad_edge=False, title="[red]title[/]")
        table.add_column("study")
        table.add_column(":smile:")
        table.add_row("[bold]demo[/bold]", "a[/b]")
        con = Console(file=io.StringIO(), width=width)
        print_table(table, con)
        out = con.file.getvalue()
        for text in ("[red]title[/]", "[bold]demo[/bold]", "a[/b]", ":smile:"):
            assert text in out.replace("\n", "") or width == 20, (text, out)
        assert "😄" not in out


def test_what_it_does_not_know_is_left_to_rich():
    boxed = Table(title="edged")  # rich's default outer edge
    boxed.add_column("a")
    con = Console(file=io.StringIO(), width=80)
    assert _plain_layout(boxed, con, 80) is None
    wide = Table(show_edge=False, pad_edge=False)
    wide.add_column("a")
    wide.add_row("x" * 100)  # wider than the console: rich wraps it
    assert _plain_layout(wide, con, 80) is None
    two_lines = Table(show_edge=False, pad_edge=False)
    two_lines.add_column("a")
    two_lines.add_row("x\ny")
    assert _plain_layout(two_lines, con, 80) is None
    print_table(two_lines, con)
    assert "x" in con.file.getvalue() and "y" in con.file.getvalue()
