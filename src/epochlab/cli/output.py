"""Where the CLI prints: the consoles and the one-line warning (no torch: ``epochlab runs``
and ``report`` import only this, the store and rich)."""

from __future__ import annotations

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

# Piped or captured output (CI logs, files) gets 120 columns rather than
# rich's 80, so the result tables are not squeezed into ellipses.
# emoji=False: a ":name:" in a study name, a path or a setting is shown as written. Markup is
# kept for epochlab's own words; what users wrote is escaped where it meets markup, and
# tables show their cells as plain text (print_table).
_probe = Console()
console = Console(highlight=False, emoji=False,
                  width=None if _probe.is_terminal else max(_probe.width, 120))
err_console = Console(stderr=True, highlight=False, emoji=False)


def warn(message: str) -> None:
    """One warning line on stderr (yellow on a terminal): the command goes on."""
    err_console.print(f"[yellow]Warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_table(table: Table, con: Console | None = None, *, full_width: bool = False) -> None:
    """Print ``table`` as ``con.print(table)`` does, faster for the plain tables the CLI makes.

    Cells, headers and the title are text, shown as written: a ``[bold]`` or ``:smile:``
    in a study name or a setting is not markup (rich would restyle it, or fail on a
    ``[/x]``). A table of one-line cells that fits the console's width (epochlab's results
    tables, with rich's default heavy-head box and no outer edge) is laid out here and
    printed as one line of text each row: rich measures and wraps every cell, ~5 ms for a
    sweep's 12 rows and ~20 ms for a 50-epoch fit's, against ~0.2 ms. Anything else (a
    table wider than the console, other boxes or styles) is left to rich. The output is
    rich's, character for character (``tests/cli/test_output.py`` compares them).
    ``full_width``: never squeeze the table to the console's width (a pipe or file gets
    every cell in full).

    Example:
        >>> import io
        >>> t = Table(show_edge=False, pad_edge=False, title="demo")
        >>> t.add_column("run", justify="right"); t.add_column("lr", justify="right")
        >>> t.add_row("1", "0.1"); t.add_row("10", "0.001")
        >>> out = Console(file=io.StringIO(), width=80)
        >>> print_table(t, out)
        >>> print(*(line.rstrip() for line in out.file.getvalue().splitlines()), sep=chr(10))
           demo
        run ┃    lr
        ━━━━╇━━━━━━
          1 │   0.1
         10 │ 0.001
    """
    con = console if con is None else con
    text = _plain_layout(table, con, width=None if full_width else con.width)
    if text is not None:
        con.print(text, no_wrap=True, overflow="ignore", crop=False)
        return
    _literal(table)
    if full_width:
        width = Measurement.get(con, con.options.update_width(1000), table).maximum
        Console(width=max(width, con.width), highlight=False, file=con.file).print(table)
    else:
        con.print(table)


def _plain_layout(table: Table, con: Console, width: int | None) -> Text | None:
    """``table`` as rich lays it out within ``width`` columns (None: any), or None where this
    does not know rich's answer."""
    if not _plain_table(table) or con.options.ascii_only or con.legacy_windows:
        return None
    columns = table.columns
    cells = [[c.header, *c._cells] for c in columns]
    if not all(isinstance(v, str) and _plain_text(v) for col in cells for v in col):
        return None
    last = len(columns) - 1
    pads = [(0 if i == 0 else 1, 0 if i == last else 1) for i in range(len(columns))]
    widths = [max(map(cell_len, col)) for col in cells]
    total = sum(w + left + right for w, (left, right) in zip(widths, pads, strict=True)) + last
    title = table.title
    if (width is not None and total > width) or (title is not None and (not isinstance(title, str)
                                                    or not _plain_text(title)
                                                    or cell_len(title) > total)):
        return None
    text = Text(end="")
    if title is not None:
        left = (total - cell_len(title)) // 2
        text.append(" " * left + title + " " * (total - cell_len(title) - left), "table.title")
        text.append("\n")
    n_rows = len(cells[0])
    for r in range(n_rows):
        if r:
            text.append("\n")
        style = table.header_style if r == 0 else None
        for i, col in enumerate(cells):
            if i:
                text.append("┃" if r == 0 else "│")
            left, right = pads[i]
            gap = " " * (widths[i] - cell_len(col[r]))
            value = gap + col[r] if columns[i].justify == "right" else col[r] + gap
            text.append(" " * left + value + " " * right, style)
        if r == 0:
            text.append("\n" + "╇".join("━" * (w + left + right)
                                         for w, (left, right) in zip(widths, pads, strict=True)))
    return text


def _plain_table(table: Table) -> bool:
    """Whether ``table`` has the settings :func:`_plain_layout` reproduces (rich's defaults
    with ``show_edge=False, pad_edge=False``, left or right columns, no styles)."""
    return (table.box is box.HEAVY_HEAD and not table.show_edge and not table.pad_edge
            and table.show_header and not table.show_footer and not table.show_lines
            and table.padding == (0, 1, 0, 1) and not table.expand and table.width is None
            and table.min_width is None and table.caption is None and not table.row_styles
            and table.leading == 0 and not table.collapse_padding and table.style == "none"
            and table.header_style == "table.header" and table.border_style is None
            and table.title_style is None and table.title_justify == "center"
            and table.safe_box is None and not table.highlight
            and all(row.style is None and not row.end_section for row in table.rows)
            and all(c.justify in ("left", "right") and not c.style and not c.header_style
                    and c.width is None and c.min_width is None and c.max_width is None
                    and c.ratio is None and c.vertical == "top" and not c.highlight
                    for c in table.columns)
            and bool(table.columns))


def _plain_text(value: str) -> bool:
    # One line: no newlines, tabs or other control characters (rich expands or wraps them).
    return value.isprintable()


def _literal(table: Table) -> None:
    """Make ``table``'s text cells, headers and title plain :class:`Text`, which rich prints as
    written (a ``str`` cell would be read as markup and emoji codes)."""
    for column in table.columns:
        if isinstance(column.header, str):
            column.header = Text(column.header)
        column._cells = [Text(v) if isinstance(v, str) else v for v in column._cells]
    if isinstance(table.title, str):
        table.title = Text(table.title, style="table.title")
