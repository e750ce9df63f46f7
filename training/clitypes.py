"""Parameter types shared by the `retention` command's modules."""

from __future__ import annotations

from datetime import UTC, datetime

import click


class _UTCDateTime(click.ParamType):
    """An ISO-8601 date or time; without a zone it is taken as UTC."""

    name = "datetime"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 date or time (e.g. 2026-06-01 or 2026-06-01T12:00:00Z)")
        return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


UTC_DATETIME = _UTCDateTime()
