"""Escaping and assembly of the report page: one self-contained HTML file.

Every text that reaches the page (run names, paths, config values, class names) goes through
``esc`` (``html.escape`` with quotes), so a run called ``<script>…`` shows as text. The page has no
script and its Content-Security-Policy allows nothing but inline styles and ``data:`` images: it
opens from disk and never touches the network.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
img { max-width: 100%; display: block; margin: .4em 0; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .8em; }
.note { color: #555; font-size: .85em; } .oracle { color: #a33; }
nav a { margin-right: 1em; }
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


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def details(summary: str, body: str) -> str:
    return f"<details><summary>{esc(summary)}</summary>\n{body}\n</details>"


def page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"{body}\n</body>\n</html>\n")
