"""A report document: sections of tables, text and figures, written as a self-contained
index.html (images embedded, opens offline), report.md with PNGs beside it, and CSVs.

Every string handed to a Document is data (labels and names come from other people's
results): it is escaped for each format and never read as Markdown, HTML or a formula.
The one formatting a report adds itself, bold best values, is asked for with ``Bold``."""

from __future__ import annotations

import base64
import io
import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from lossbench.core.atomic import atomic_write_bytes, atomic_write_text
from lossbench.core.escaping import csv_text, html_text, md_block, md_inline
from lossbench.core.paths import contained, safe_name


def fmt(v, digits: int = 4) -> str:
    """A number as a reader wants it: – for missing, ∞ for never, 4 significant digits."""
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}g}"
    return str(v)


class Bold(str):
    """A table cell the report shows bold (the best value of a column). Bold is asked for
    by type, never read from the text: a label that starts with ``**`` stays plain."""


def md_table(header, rows) -> str:
    def cell(c):
        return f"**{md_inline(c)}**" if isinstance(c, Bold) and str(c).strip() else md_inline(c)
    lines = ["| " + " | ".join(md_inline(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_NUMBER = re.compile(r"^[-+−]?[\d∞–.]")


def html_table(header, rows) -> str:
    """Cells given as ``Bold`` are shown bold; every cell's text is escaped. Numbers are
    right-aligned (digits line up), words left-aligned."""
    def cell(c):
        text = f"<b>{html_text(c)}</b>" if isinstance(c, Bold) else html_text(c)
        return f"<td>{text}</td>" if _NUMBER.match(str(c)) else f"<td class='t'>{text}</td>"
    head = "".join(f"<th>{html_text(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


class Document:
    """Collects sections in order; ``write`` renders both formats into ``out``."""

    def __init__(self, title: str, out: str | Path):
        self.title, self.out = title, Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.sections: list[tuple[str, list[str], list[str]]] = []  # title, md parts, html parts

    def section(self, title: str) -> None:
        self.sections.append((title, [], []))

    def text(self, text: str) -> None:
        self.sections[-1][1].append(md_block(text))
        self.sections[-1][2].append(f"<p>{html_text(text)}</p>")

    def bullets(self, items: list[str]) -> None:
        if items:
            self.sections[-1][1].append("\n".join(f"- {md_block(i)}" for i in items))
            self.sections[-1][2].append("<ul>" + "".join(f"<li>{html_text(i)}</li>"
                                                         for i in items) + "</ul>")

    def table(self, header, rows) -> None:
        self.sections[-1][1].append(md_table(header, rows))
        self.sections[-1][2].append(html_table(header, rows))

    def _file(self, name: str, suffix: str) -> Path:
        """``out/name.suffix``; ``name`` may hold data (a tuned parameter's name), so it must
        be a plain name and the file must stay inside ``out``."""
        safe_name(name, what="report file name")
        return contained(self.out, self.out / f"{name}{suffix}", what="report file")

    def figure(self, name: str, caption: str, fig) -> None:
        """Saves ``name``.png beside report.md and embeds the same bytes in the HTML."""
        data = png(fig)
        atomic_write_bytes(self._file(name, ".png"), data, root=self.out)
        self.sections[-1][1].append(f"### {md_inline(caption)}\n\n"
                                    f"![{md_inline(caption)}]({name}.png)")
        self.sections[-1][2].append(
            f"<figure><img alt='{html_text(caption)}' src='data:image/png;base64,"
            f"{base64.b64encode(data).decode()}'><figcaption>{html_text(caption)}"
            f"</figcaption></figure>")

    def csv(self, name: str, table: pd.DataFrame) -> None:
        """Text cells that a spreadsheet would run as formulas get a leading quote."""
        atomic_write_text(self._file(name, ".csv"), csv_text(table), root=self.out)

    def write(self) -> Path:
        md = f"# {md_inline(self.title)}\n\n" + "\n\n".join(
            f"## {md_inline(t)}\n\n" + "\n\n".join(m) for t, m, _ in self.sections) + "\n"
        atomic_write_text(self.out / "report.md", md, root=self.out)
        body = "".join(f"<h2>{html_text(t)}</h2>" + "".join(h) for t, _, h in self.sections)
        atomic_write_text(self.out / "index.html",
                          _HTML.format(title=html_text(self.title), body=body), root=self.out)
        return self.out


_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}}table{{border-collapse:collapse;font-size:13px;margin:1em 0}}td,th{{border:1px solid
#ccc;padding:3px 7px;text-align:right;vertical-align:top}}td.t,th:first-child{{text-align:left}}th{{background:#f3f3f3}}img{{max-width:100%}}figure{{margin:1.5em 0}}figcaption{{color:#555;
font-size:13px}}</style></head><body><h1>{title}</h1>{body}</body></html>"""
