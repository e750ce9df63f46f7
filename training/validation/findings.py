"""What validation finds: each problem with its file, data row and column, and the report of a whole run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from retention.utc import iso_z


@dataclass(frozen=True)
class Finding:
    file: str  # file name as on disk ("usage/part-003.parquet" inside a folder of Parquet parts)
    row: int | None  # 1-based data row number (header not counted); None for file/column-level problems
    column: str | None
    message: str

    def __str__(self) -> str:
        where = [f"row {self.row}"] if self.row is not None else []
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{self.file}: {', '.join(where) + ': ' if where else ''}{self.message}"


@dataclass
class ValidationReport:
    errors: list[Finding]
    warnings: list[Finding]
    window_end: datetime
    counts: dict[str, int] = field(default_factory=dict)  # data rows per readable table

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        lines = [f"Data window end: {iso_z(self.window_end)}"]
        if self.counts:
            lines.append("Rows: " + ", ".join(f"{name} {n:,}" for name, n in self.counts.items()))
        for title, findings in (("error", self.errors), ("warning", self.warnings)):
            if findings:
                lines.append(f"{len(findings)} {title}{'s' if len(findings) != 1 else ''}:")
                lines += [f"  {title.upper()}: {f}" for f in findings]
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)
