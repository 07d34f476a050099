"""Escaping and assembly of the report page: one self-contained HTML file.

Every text that reaches the page (run names, paths, config values, class names) goes through
``esc`` (``html.escape`` with quotes), so a run called ``<script>…`` shows as text. The page has no
script and its Content-Security-Policy allows nothing but inline styles and ``data:`` images: it
opens from disk and never touches the network.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
details.section { margin-top: 1.2em; }
details.section > summary { font-size: 1.15em; font-weight: bold; cursor: pointer; }
table { border-collapse: collapse; margin: .6em 0; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; } td { white-space: nowrap; }
img { max-width: 100%; display: block; margin: .4em 0; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .8em; }
.note { color: #555; font-size: .85em; } .oracle { color: #a33; }
.read { font-size: .9em; margin: .2em 0 1em; }
.warning { color: #8a4b00; background: #fff4e0; border-left: 4px solid #e08a00; padding: .3em .6em; }
nav.toc { background: #f7f7f7; padding: .4em 1em; font-size: .9em; }
nav.toc ol { margin: .2em 0; } nav.toc li { margin: .1em 0; }
table.gallery td, table.gallery th { padding: 1px; text-align: center; border: none; }
table.gallery th { background: none; font-size: .9em; }
table.gallery th.kind { border-bottom: 1px solid #999; }
table.gallery td.gap { width: 1em; } table.gallery img { margin: 0; }
.colorbar { display: flex; align-items: center; gap: .5em; font-size: .85em; }
.colorbar img { width: 240px; height: 14px; margin: 0; }
"""


def esc(value: object) -> str:
    """Any value as HTML text (quotes escaped too: safe in attributes)."""
    return html.escape(str(value), quote=True)


def fmt(value: object, digits: int = 1) -> str:
    """A number with ``digits`` decimals, ``n/a`` for None/NaN, other values as escaped text."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return esc(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, table_id: str | None = None,
          row_class: str | None = None, text_columns: int = 1) -> str:
    """A table of already formatted cells (escape text with ``esc``/``fmt`` first); the first
    ``text_columns`` columns are left-aligned."""
    def cell(tag: str, i: int, content: str) -> str:
        cls = ' class="text"' if i < text_columns else ""
        return f"<{tag}{cls}>{content}</{tag}>"

    ident = f' id="{esc(table_id)}"' if table_id else ""
    rc = f' class="{esc(row_class)}"' if row_class else ""
    head = "".join(cell("th", i, esc(h)) for i, h in enumerate(headers))
    body = "\n".join(f"<tr{rc}>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>"
                     for r in rows)
    return f"<table{ident}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"


def image(uri: str, alt: str) -> str:
    """An embedded image (``uri`` must be a ``data:`` URI)."""
    if not uri.startswith("data:image/"):
        raise ValueError("report images must be embedded data: URIs")
    return f'<img src="{uri}" alt="{esc(alt)}">'


def prose(text: str) -> str:
    """Escaped text whose `backquoted` spans (commands, file names) become ``<code>``."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", esc(text))


def note(text: str) -> str:
    return f'<p class="note">{prose(text)}</p>'


def read(text: str) -> str:
    """The sentence under a table or figure that says what to read in it."""
    return f'<p class="read">{prose(text)}</p>'


def warning(text: str) -> str:
    return f'<p class="warning">{prose(text)}</p>'


def details(summary: str, body: str) -> str:
    return f"<details><summary>{esc(summary)}</summary>\n{body}\n</details>"


def section(anchor: str, title: str, body: str, *, is_open: bool = True) -> str:
    """A collapsible section (``<details>``, no script) that the table of contents links to."""
    return (f'<details class="section" id="{esc(anchor)}"{" open" if is_open else ""}>'
            f"<summary>{esc(title)}</summary>\n{body}\n</details>")


def toc(entries: Sequence[tuple[str, str, Sequence[tuple[str, str]]]]) -> str:
    """The table of contents: (anchor, title, sub-entries as (anchor, title))."""
    def item(anchor: str, title: str, inner: Sequence[tuple[str, str]]) -> str:
        sub = "".join(f'<li><a href="#{esc(a)}">{esc(t)}</a></li>' for a, t in inner)
        return (f'<li><a href="#{esc(anchor)}">{esc(title)}</a>'
                + (f"<ol>{sub}</ol>" if sub else "") + "</li>")

    return ('<nav class="toc"><b>Contents</b><ol>'
            + "".join(item(*e) for e in entries) + "</ol></nav>")


def page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"{body}\n</body>\n</html>\n")
