"""How the validator writes SQL and quotes values in its messages."""

from __future__ import annotations

from pathlib import Path

from retention.contract import Column


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def show(value: object) -> str:
    """A cell value for a message: quoted text, shortened."""
    if value is None:
        return "empty"
    text = str(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return "'" + text + "'"


def _num(x: float) -> str:
    return f"{x:g}"


def bounds(col: Column) -> str:
    if col.min is not None and col.max is not None and not col.min_exclusive:
        return f"between {_num(col.min)} and {_num(col.max)}"
    parts = []
    if col.min is not None:
        parts.append(f"{'>' if col.min_exclusive else '>='} {_num(col.min)}")
    if col.max is not None:
        parts.append(f"<= {_num(col.max)}")
    return " and ".join(parts)


def first_lines(err: Exception, path: Path | None = None, n: int = 3) -> str:
    """The useful head of a DuckDB error message, on one line."""
    lines = []
    for line in str(err).splitlines():
        line = line.strip()
        if line.startswith(("The search space used was", "Possible fixes")):
            break
        if line:
            lines.append(line)
    text = "; ".join(lines[:n])
    for prefix in ("Invalid Input Error: ", "IO Error: ", "Conversion Error: ", "Binder Error: "):
        text = text.replace(prefix, "")
    if path is not None:
        text = text.replace(str(path), path.name)
    return text
