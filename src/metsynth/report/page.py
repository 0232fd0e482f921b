"""HTML building blocks of the report: escaping, embedded PNGs, small tables, notes, the page.

Everything the page needs is inline (CSS in a ``<style>`` element, pictures as ``data:image/png``
URIs), so ``index.html`` can be mailed, archived or opened offline. No scripts, no external URLs.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CSS = """
:root { --ink: #1d232b; --muted: #5b6673; --rule: #c9d0d8; --soft: #f3f5f7; --accent: #1f5f8b; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
       font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 48px; }
header { border-bottom: 2px solid var(--ink); margin-bottom: 12px; padding-bottom: 8px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 34px 0 8px; padding-bottom: 3px; border-bottom: 1px solid var(--rule); }
h3 { font-size: 16.5px; margin: 22px 0 6px; }
p { margin: 6px 0; }
code, pre { font-family: "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
pre { background: var(--soft); border: 1px solid var(--rule); padding: 10px 12px; overflow-x: auto;
      white-space: pre-wrap; word-break: break-word; }
.meta, .caption, .note { color: var(--muted); font-size: 13.5px; }
.caption { margin: 4px 0 14px; }
nav.toc { background: var(--soft); border: 1px solid var(--rule); padding: 8px 16px; margin: 12px 0 6px;
          font-size: 14px; columns: 2; }
nav.toc a { color: var(--accent); text-decoration: none; }
nav.toc ol { margin: 0; padding-left: 20px; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 14px; font-variant-numeric: tabular-nums; }
.scroll { max-width: 100%; overflow-x: auto; }
.scroll > table { margin: 8px 0 4px; }
header .meta code { word-break: break-all; }
td code { word-break: break-all; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 4px; }
th, td { padding: 4px 10px; text-align: center; border-bottom: 1px solid var(--rule); }
thead th { border-bottom: 1.5px solid var(--ink); border-top: 1.5px solid var(--ink); }
tbody tr:last-child th, tbody tr:last-child td { border-bottom: 1.5px solid var(--ink); }
tbody th { text-align: left; font-weight: 600; }
th.group { border-bottom: 1px solid var(--rule); }
td small { color: var(--muted); }
table.kv th { font-weight: 600; text-align: left; color: var(--muted); }
table.kv td { text-align: left; }
table.data td.l, table.data th.l { text-align: left; }
section p small, .tablenote { color: var(--muted); font-size: 12.5px; }
p.tablenote, section table + p { margin: 2px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { border: 1px solid var(--rule); border-left: 4px solid var(--accent); padding: 8px 14px;
        min-width: 170px; background: #fff; }
.card .v { font-size: 22px; font-weight: 700; }
.card .v small { font-size: 13px; font-weight: 400; color: var(--muted); }
.card .k { font-size: 12.5px; color: var(--muted); }
.notrun { border: 1px dashed var(--rule); background: var(--soft); color: var(--muted); padding: 8px 12px;
          margin: 8px 0; font-size: 14px; }
.error { border: 1px solid #c0392b; background: #fdf0ee; color: #922b21; padding: 8px 12px; margin: 8px 0; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid var(--rule); }
figure { max-width: 100%; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 4px; }
.cols { display: grid; grid-template-columns: 3fr 2fr; gap: 8px 40px; align-items: start; }
@media (max-width: 900px) { .cols { grid-template-columns: 1fr; } }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.grid figure { flex: 1 1 300px; max-width: 49%; margin: 4px 0; }
.swatch { display: inline-block; width: 22px; height: 0; border-top: 3px solid; vertical-align: middle; }
@media print {
  body { font-size: 11pt; }
  main { max-width: none; padding: 0; }
  nav.toc { display: none; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  .part, figure, table, .cards { break-inside: avoid; page-break-inside: avoid; }
  section { break-before: auto; }
  pre { white-space: pre-wrap; }
  .scroll { overflow: visible; }
  table { font-size: 8.5pt; }
  th, td { padding: 2px 5px; }
  figure img { max-width: 100% !important; }
  .grid figure { max-width: 49%; }
}
"""


@dataclass
class Section:
    """One numbered part of the report (its ``html`` holds everything below the heading)."""

    id: str
    title: str
    html: str
    ran: bool = True  # False when its inputs are missing (the body is a "not run" note)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes (checked: a non-PNG is a bug upstream)."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not PNG data")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes, caption: str = "", alt: str = "", width: int | None = None) -> str:
    """A ``<figure>`` with the PNG embedded; ``caption`` is HTML (escape it yourself)."""
    # min(): the picture's natural cap, but never wider than the page (narrow windows, paper)
    style = f' style="max-width:min({int(width)}px,100%)"' if width else ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (f'<figure><img src="{png_data_uri(png)}" alt="{esc(alt or "figure")}"{style}>{cap}</figure>')


def part(title: str, body: str) -> str:
    """A titled sub-part of a section, kept on one printed page where it fits (``body`` is HTML)."""
    return f'<div class="part"><h3>{esc(title)}</h3>\n{body}</div>'


def not_run(reason: str) -> str:
    """The note shown where a part's inputs are missing (``reason`` is HTML)."""
    return f'<div class="notrun"><b>Not run.</b> {reason}</div>'


def error_box(what: str, err: BaseException) -> str:
    return (f'<div class="error"><b>{esc(what)} could not be built:</b> {esc(type(err).__name__)}: '
            f"{esc(err)}</div>")


def scroll(table_html: str) -> str:
    """A table in a box that scrolls sideways where the page is narrower than the table."""
    return f'<div class="scroll">{table_html}</div>'


def kv_table(rows: Iterable[tuple[str, Any]]) -> str:
    """Two-column key/value table; values are HTML (escape them yourself)."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return scroll(f'<table class="kv"><tbody>{body}</tbody></table>')


def data_table(header: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1, caption: str = "",
               raw: bool = False) -> str:
    """A plain table; the first ``left`` columns are left-aligned (row labels). Cells are escaped
    unless ``raw``."""
    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="l"' if i < left else ""
        return f"<{tag}{cls}>{v if raw else esc(v)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return scroll(f'<table class="data">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


# --------------------------------------------------------------------------- number formats
HASH_PREFIX = 16


def short_hash(value: Any, n: int = HASH_PREFIX) -> str:
    """The first ``n`` characters of a hex digest (a table column says "sha256 prefix"); '-' if empty."""
    text = str(value or "").strip()
    return text[:n] if text else "-"


def fmt(value: Any, decimals: int = 2) -> str:
    """A number with fixed decimals; '-' for None/NaN."""
    if value is None:
        return "-"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "-"
    return f"{v:.{decimals}f}"


def fmt_p(p: Any) -> str:
    """A p-value the way papers print it: 3 decimals, or scientific below 0.001; 'n/a' for NaN."""
    try:
        v = float(p)
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(v):
        return "n/a"
    return f"{v:.1e}" if v < 1e-3 else f"{v:.3f}"


def fmt_seconds(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "-"
    if math.isnan(s):
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        minutes, sec = divmod(int(round(s)), 60)
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(int(round(s / 60)), 60)
    return f"{hours} h {minutes:02d} min"


def render_page(title: str, subtitle_html: str, sections: Sequence[Section]) -> str:
    """The whole document: header, table of contents, numbered sections."""
    toc = "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a>{"" if s.ran else " <i>(not run)</i>"}</li>'
                  for s in sections)
    body = "\n".join(
        f'<section id="{esc(s.id)}" class="{"ran" if s.ran else "notrun-section"}">\n'
        f"<h2>{i}. {esc(s.title)}</h2>\n{s.html}\n</section>"
        for i, s in enumerate(sections, start=1)
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header><h1>{esc(title)}</h1><p class=\"meta\">{subtitle_html}</p></header>\n"
        f"<nav class=\"toc\"><ol>{toc}</ol></nav>\n{body}\n</main>\n</body>\n</html>\n"
    )
