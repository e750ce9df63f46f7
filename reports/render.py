"""What every report page shares: the one Jinja2 environment (templates in reports/templates, built once at
import, autoescaped, strict about undefined names, the number formats of reports.formatting as filters), a
chart as an inline PNG, and the atomic write of a page."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from reports.formatting import FILTERS, TESTS
from retention.files import write_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _escaped(value: Any) -> Any:
    """Every `{{ value }}` of a template passes here before autoescaping. Text is escaped with the standard
    library's entities (`&quot;`, as the pages always had; markupsafe would write `&#34;`) and marked safe;
    markup (a macro's output) passes as it is. None is refused: a missing number must go through a filter of
    reports.formatting, which prints its dash, never "None"."""
    if hasattr(value, "__html__"):
        return value
    if value is None:
        raise TypeError("None reached a report page unformatted: pass it through a filter of reports.formatting")
    return Markup(html.escape(str(value)))


ENV = Environment(loader=PackageLoader("reports", "templates"), autoescape=True, undefined=StrictUndefined,
                  trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, finalize=_escaped)
ENV.filters.update(FILTERS)
ENV.tests.update(TESTS)


@dataclass(frozen=True)
class Chart:
    """A chart ready for an <img>: the PNG inlined as a data URI (the page stays one self-contained file)."""

    src: str
    alt: str


def chart(fig: Figure, alt: str) -> Chart:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return Chart("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), alt)


def render(template: str, **context: Any) -> str:
    """The page `template` (a file in reports/templates) filled with `context`."""
    return ENV.get_template(template).render(**context)


def write_page(path: str | Path, text: str) -> Path:
    """Write a rendered page; a reader (or a crashed run) never sees half of it (retention.files.write_atomic)."""
    return write_atomic(path, text)
