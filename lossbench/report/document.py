"""A report document: sections of tables, text and figures, written as a self-contained
index.html (images embedded, opens offline), report.md with PNGs beside it, and CSVs."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from lossbench.atomic import atomic_write_bytes, atomic_write_text


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


def md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header, rows) -> str:
    """Cells written **like this** are shown bold (the best value of a column)."""
    def cell(c):
        c = html.escape(str(c))
        return f"<b>{c[2:-2]}</b>" if c.startswith("**") else c
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
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
        self.sections[-1][1].append(text)
        self.sections[-1][2].append(f"<p>{html.escape(text)}</p>")

    def bullets(self, items: list[str]) -> None:
        if items:
            self.sections[-1][1].append("\n".join(f"- {i}" for i in items))
            self.sections[-1][2].append("<ul>" + "".join(f"<li>{html.escape(i)}</li>"
                                                         for i in items) + "</ul>")

    def table(self, header, rows) -> None:
        self.sections[-1][1].append(md_table(header, rows))
        self.sections[-1][2].append(html_table(header, rows))

    def figure(self, name: str, caption: str, fig) -> None:
        """Saves ``name``.png beside report.md and embeds the same bytes in the HTML."""
        data = png(fig)
        atomic_write_bytes(self.out / f"{name}.png", data)
        self.sections[-1][1].append(f"### {caption}\n\n![{caption}]({name}.png)")
        self.sections[-1][2].append(
            f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,"
            f"{base64.b64encode(data).decode()}'><figcaption>{html.escape(caption)}"
            f"</figcaption></figure>")

    def csv(self, name: str, table: pd.DataFrame) -> None:
        atomic_write_text(self.out / f"{name}.csv", table.to_csv(index=False))

    def write(self) -> Path:
        md = f"# {self.title}\n\n" + "\n\n".join(
            f"## {t}\n\n" + "\n\n".join(m) for t, m, _ in self.sections) + "\n"
        atomic_write_text(self.out / "report.md", md)
        body = "".join(f"<h2>{html.escape(t)}</h2>" + "".join(h) for t, _, h in self.sections)
        atomic_write_text(self.out / "index.html",
                          _HTML.format(title=html.escape(self.title), body=body))
        return self.out


_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}}table{{border-collapse:collapse;font-size:13px;margin:1em 0}}td,th{{border:1px solid
#ccc;padding:3px 7px;text-align:right;vertical-align:top}}td:first-child,th:first-child,td:last-child{{text-align:
left}}th{{background:#f3f3f3}}img{{max-width:100%}}figure{{margin:1.5em 0}}figcaption{{color:#555;
font-size:13px}}</style></head><body><h1>{title}</h1>{body}</body></html>"""
