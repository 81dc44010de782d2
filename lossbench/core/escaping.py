"""Escaping of untrusted text, one helper per output format.

Labels, suite names, descriptions, metric names and samples come from results
directories and suite files that other people wrote. Each output format gives
some characters a meaning: Markdown renderers execute inline HTML and turn
``**x**`` or ``[x](y)`` into formatting and links, spreadsheets run a CSV cell
that starts with ``=``, matplotlib parses ``$...$`` as mathtext (and raises
on what it cannot parse), and LaTeX runs ``\\input``. Everything written from data goes
through the helper of its format, so the text is shown as it is and never interpreted.
"""

from __future__ import annotations

import html
import re

import pandas as pd

# Markdown punctuation with a meaning anywhere in a line: code spans, emphasis, links and
# images, GFM tables, strikethrough and math, headings' closing #s, and the escape itself.
# ``_`` is handled apart (see _md_char); '<', '>' and '&' are HTML-escaped instead.
_MD_INLINE = set("\\`*[]|~$#")
# Starts of a paragraph that would make it a list item instead: "- x", "+ x", "1. x",
# "1) x" ('*', '#', '`' and '>', which also start blocks, are escaped anywhere anyway).
_MD_BLOCK_START = re.compile(r"[-+]|\d{1,9}[.)]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _str(value: object) -> str:
    """``str(value)`` with lone surrogates (JSON may hold "\\ud800") as U+FFFD: they cannot
    be encoded as UTF-8, so one in a label would fail the whole report's write."""
    return _SURROGATE.sub("\ufffd", str(value))


def _md_char(text: str, i: int) -> str:
    """One character of ``text``, backslash-escaped when Markdown would read it as syntax.

    An underscore between two letters or digits (``cross_entropy``) cannot open or close
    emphasis in CommonMark, so it stays as it is and common names stay readable."""
    c = text[i]
    if c == "_":
        inner = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
        return c if inner else "\\_"
    return "\\" + c if c in _MD_INLINE else c


def md_inline(text: object) -> str:
    """``text`` as literal Markdown inside a line (table cell, heading, caption).

    Whitespace runs, line breaks included, become one space: a newline would end a table
    row or start a new block, and rendered Markdown shows one space for a run anyway."""
    text = " ".join(_str(text).split())
    escaped = "".join(_md_char(text, i) for i in range(len(text)))
    return html.escape(escaped, quote=False)


def md_block(text: object) -> str:
    """``text`` as a literal Markdown paragraph or list item: ``md_inline``, and a start
    that would make a list item ("- x", "+ x", "1. x") is escaped too."""
    out = md_inline(text)
    start = _MD_BLOCK_START.match(out)
    if start:
        end = start.end() - 1
        out = out[:end] + "\\" + out[end:]
    return out


def html_text(text: object) -> str:
    """``text`` as literal HTML text or attribute value (quotes escaped too)."""
    return html.escape(_str(text), quote=True)


def plain(text: object) -> str:
    """``text`` for a matplotlib Text (titles, tick labels, legend entries) shown as it is.

    Matplotlib reads text with an even number of unescaped ``$`` as mathtext, and
    raises on mathtext it cannot parse (``cost $\\notacommand$``). Escaping every
    ``$`` leaves no unescaped one, and matplotlib shows ``\\$`` as ``$`` in plain text,
    which undoes exactly this escape: the label is drawn character for character."""
    return _str(text).replace("$", "\\$")


# A cell a spreadsheet would run as a formula (OWASP CSV injection): '=', '+', '-', '@',
# tab or carriage return first; or quotes and then one of those, so that a cell which
# already starts with a quote is escaped too and csv_unescape_frame can tell them apart.
_FORMULA = re.compile(r"'*[=+\-@\t\r]")


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
          "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
          "|": r"\textbar{}", "\n": " ", "\r": " "}


def latex_text(text: object) -> str:
    r"""Text for a LaTeX document: every character LaTeX gives a meaning (\ & % $ # _ { } ~ ^,
    and < > | which the default font encoding misprints) is escaped, so ``\input{x}`` in a
    label is printed, never run."""
    return "".join(_LATEX.get(ch, ch) for ch in _str(text))


def csv_safe_cell(value: object) -> object:
    """A string a spreadsheet would run as a formula, with a ``'`` in front; any other
    value unchanged (numbers stay numbers: -1.5 is a value, not a formula)."""
    if isinstance(value, str) and _FORMULA.match(value):
        return "'" + value
    return value


def csv_unescape_cell(value: object) -> object:
    """The inverse of csv_safe_cell: drops exactly the quote it added."""
    if isinstance(value, str) and value.startswith("'") and _FORMULA.match(value, 1):
        return value[1:]
    return value


def _map_frame(df: pd.DataFrame, cell) -> pd.DataFrame:
    """``cell`` applied to the column names and to every value of the text columns
    (by position, so repeated column names are no problem)."""
    out = df.copy()
    for i, dtype in enumerate(df.dtypes):
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            out.isetitem(i, df.iloc[:, i].map(cell).astype(dtype))  # object stays object
    out.columns = [cell(c) for c in df.columns]
    return out


def csv_safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` safe to open in a spreadsheet: csv_safe_cell on every string cell
    of the text (object or string dtype) columns and on the column names; numeric columns
    are left alone."""
    return _map_frame(df, csv_safe_cell)


def csv_unescape_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The inverse of csv_safe_frame, for a reader of a CSV it wrote: the quotes it added
    are dropped, nothing else changes."""
    return _map_frame(df, csv_unescape_cell)


def csv_text(df: pd.DataFrame) -> str:
    """``df`` as CSV text (no index) that is safe in a spreadsheet and reads back intact.

    csv_safe_frame, and CRLF line ends (RFC 4180): Python's csv writer quotes a field
    holding a character of the line terminator, and with pandas' default "\n" a lone
    "\r" inside a label went unquoted, so readers split the row there."""
    return csv_safe_frame(df).to_csv(index=False, lineterminator="\r\n")


def printable_names(options) -> str:
    """Names joined for an error line; a label read from a results folder may hold a line
    break or a control character, which would split the one-line error (shown escaped)."""
    return ", ".join(o if str(o).isprintable() else repr(o)[1:-1] for o in map(str, options))


def terminal(text: object) -> str:
    """``text`` safe to print on a terminal: every character that is not printable (ESC and
    BEL, which start sequences that retitle or rewrite the terminal, CR and line breaks,
    C1 controls, bidirectional overrides) is shown as its escape (``\\x1b``), never emitted.

    >>> terminal("ok\\x1b]0;pwned\\x07 label")
    'ok\\\\x1b]0;pwned\\\\x07 label'
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in _str(text))
