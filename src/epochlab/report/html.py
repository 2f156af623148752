"""One self-contained HTML page: sections of text, tables and figures embedded as base64 PNG.

This module owns the page format shared by ``epochlab report --html`` and
``epochlab tour``: a :class:`Section` holds what one part of a report says
(what its figures show and, where a slide of the seed is wrong, what the
slide claims and what is true), its key numbers, tables and figures; the
page is one file with inline CSS, figures as ``data:`` URIs and no script,
so it opens with no network and no other file. :func:`render_page` refuses
figures without a title, labelled axes or a legend
(:func:`~epochlab.report.figures.check_figure`) and any link that leaves
the page.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from epochlab._atomic import atomic_write
from epochlab.report.figures import check_figure, png_bytes

__all__ = ["Section", "Table", "render_page", "write_page"]


@dataclass
class Table:
    """A small table: column names and rows (numbers formatted with ``fmt``)."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""
    fmt: str = ".4g"

    def cell(self, v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return "—" if v is None else ("on" if v else "off")
        if isinstance(v, float):
            return format(v, self.fmt)
        return str(v)


@dataclass
class Section:
    """One section of a report page.

    Attributes:
        title: the heading (``"Slide 4: batch size"``).
        shows: one or two sentences: what the figures and numbers show.
        claim: what the seed's slide claims, where it is wrong (else empty).
        truth: what is true instead, with the numbers (else empty).
        facts: key numbers as (name, value) pairs, shown as a definition list.
        tables, figures: content; figures are checked and embedded when rendered.
        notes: further short paragraphs (how it was run, what was fused or shared).
        code: a short snippet shown verbatim (the call that reproduces the section).
        anchor: the section's id in the page; made from the title when empty.

    Example:
        >>> from epochlab.report.figures import new_figure
        >>> fig, (ax,) = new_figure(3, 2)
        >>> _ = ax.plot([1, 2], [0.5, 0.4], label="training loss")
        >>> _ = ax.set(title="loss", xlabel="epoch", ylabel="loss (nats)"); _ = ax.legend()
        >>> s = Section("Loss", "The loss falls.", figures=[(fig, "loss per epoch")])
        >>> "data:image/png;base64," in render_page("demo", [s])
        True
    """

    title: str
    shows: str
    claim: str = ""
    truth: str = ""
    facts: list[tuple[str, Any]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[Figure, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    code: str = ""
    anchor: str = ""
    status: str = "ok"  # "ok", or "failed" with the error in notes

    def __post_init__(self) -> None:
        if not self.anchor:
            self.anchor = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1020px;margin:0 auto;
padding:1.5em;color:#1d2330;line-height:1.45;background:#fbfbfd}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:2.2em;border-bottom:2px solid #dde3ee;
padding-bottom:.2em}section{margin-bottom:1.5em}
.shows{font-size:1.05em}.claim{background:#fff4f2;border-left:4px solid #d9534f;padding:.5em .8em}
.truth{background:#f1faf3;border-left:4px solid #3c9a5f;padding:.5em .8em}
.failed{background:#fff0f0;border:2px solid #d9534f;padding:.5em .8em}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:.15em 1em;margin:.8em 0}
dl.facts dt{font-weight:600}dl.facts dd{margin:0;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em;font-variant-numeric:tabular-nums}
th,td{border:1px solid #cfd6e4;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eef2f8}td.num{text-align:right}div.table{overflow-x:auto}caption{caption-side:top;text-align:left;
font-weight:600;padding-bottom:.3em}figure{margin:1em 0}figure img{max-width:100%;height:auto;
border:1px solid #e3e7ef;background:#fff}figcaption{font-size:.9em;color:#4a5468}
pre{background:#f3f5f9;padding:.6em .8em;overflow-x:auto;font-size:.88em}
nav ol{columns:2;font-size:.95em}.meta{color:#5a6478;font-size:.9em}
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _paragraphs(text: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return "".join(f"<p{attr}>{_esc(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def _figure(fig: Figure, alt: str, name: str) -> str:
    check_figure(fig, name)
    data = base64.b64encode(png_bytes(fig)).decode("ascii")
    return (f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(alt)}</figcaption></figure>")


def _td(t: Table, v: Any) -> str:
    num = isinstance(v, (int, float)) and not isinstance(v, bool)
    return f'<td class="num">{_esc(t.cell(v))}</td>' if num else f"<td>{_esc(t.cell(v))}</td>"


def _table(t: Table) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(_td(t, v) for v in row) + "</tr>" for row in t.rows)
    cap = f"<caption>{_esc(t.caption)}</caption>" if t.caption else ""
    return (f'<div class="table"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def render_section(s: Section, number: int | None = None) -> str:
    """One ``<section>``: heading, what it shows, claim and truth, facts, tables, figures."""
    parts = [f'<section id="{_esc(s.anchor)}" data-status="{_esc(s.status)}">',
             f"<h2>{_esc(s.title)}</h2>", _paragraphs(s.shows, "shows")]
    if s.status != "ok":
        parts.append(f'<div class="failed"><strong>This section failed.</strong>'
                     f"{_paragraphs(chr(10).join(s.notes))}</div>")
    if s.claim:
        parts.append(f'<div class="claim"><strong>The slide claims:</strong> {_esc(s.claim)}</div>')
    if s.truth:
        parts.append(f'<div class="truth"><strong>What is true:</strong> {_esc(s.truth)}</div>')
    if s.facts:
        parts.append('<dl class="facts">' + "".join(
            f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in s.facts) + "</dl>")
    parts += [_table(t) for t in s.tables]
    parts += [_figure(f, alt, f"{s.title}, figure {i}") for i, (f, alt) in enumerate(s.figures, 1)]
    if s.status == "ok":
        parts += [_paragraphs(n) for n in s.notes]
    if s.code:
        parts.append(f"<pre><code>{_esc(s.code)}</code></pre>")
    parts.append("</section>")
    return "\n".join(parts)


_LINK = re.compile(r"""\b(?:src|href|action|srcset|poster)\s*=\s*["']([^"']*)["']""", re.I)


def check_self_contained(page: str) -> None:
    """Raise ValueError if ``page`` refers to anything outside itself (only ``#`` and ``data:``).

    Example:
        >>> check_self_contained('<a href="#x">x</a><img src="data:image/png;base64,AA==">')
        >>> check_self_contained('<img src="https://example.org/a.png">')
        Traceback (most recent call last):
        ...
        ValueError: The page links outside itself: https://example.org/a.png
    """
    for target in _LINK.findall(page):
        if not (target.startswith("#") or target.startswith("data:")):
            raise ValueError(f"The page links outside itself: {target}")
    if re.search(r"url\(\s*['\"]?(?!data:|#)", page) or "@import" in page:
        raise ValueError("The page's CSS loads something from outside the page.")


def render_page(title: str, sections: Sequence[Section], intro: str = "",
                meta: Sequence[str] = ()) -> str:
    """The whole page as one string: title, intro, contents, sections, meta lines."""
    nav = "<nav><ol>" + "".join(
        f'<li><a href="#{_esc(s.anchor)}">{_esc(s.title)}</a></li>' for s in sections) + "</ol></nav>"
    body = "\n".join(render_section(s, i) for i, s in enumerate(sections, 1))
    metas = "".join(f'<p class="meta">{_esc(m)}</p>' for m in meta)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_esc(title)}</h1>{_paragraphs(intro)}{metas}{nav}\n{body}\n</body></html>\n")
    check_self_contained(page)
    return page


def write_page(path: str | os.PathLike, title: str, sections: Sequence[Section], intro: str = "",
               meta: Sequence[str] = ()) -> Path:
    """Render and write the page atomically; returns its path."""
    page = render_page(title, sections, intro, meta)
    out = atomic_write(path, lambda f: f.write(page.encode("utf-8")), binary=True)
    umask = os.umask(0)
    os.umask(umask)
    out.chmod(0o666 & ~umask)  # a page to share, not a private temporary file
    return out
