"""Reading the checked-in config files (offers, plans, policy, experiments TOML) through marshmallow schemas.

One way for all four: strict TOML types (no "50" for 50, no `true` for 1), unknown keys refused, and every
problem of a file reported in one run, one line each naming the file, where (`offer #3 (discount_50_2m)`,
`[fallback.detractor]`, `experiment 2 (offer-variants): variant 1 (model)`), the field and what is wrong.
Each file's schema builds its frozen dataclasses in `post_load`; retention.offers, retention.policy and
retention.experiments hold the schemas themselves.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Collection
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate
from marshmallow.experimental.context import Context

# (keys from the file's root to a table, that table's raw value) -> how a person names it, or None when the
# keys are just a field's path. E.g. ("offer", 2) -> "offer #3 (discount_50_2m)".
Label = Callable[[tuple, Any], "str | None"]


class ConfigError(ValueError):
    """A config file that cannot be used as written. `lines` holds every problem found, each naming the file;
    str() lists them one per line."""

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines: tuple[str, ...] = lines


class ConfigSchema(Schema):
    """A TOML table. An unknown key is an error: a typo must not quietly fall back to a default."""

    class Meta:
        unknown = RAISE

    error_messages = {"unknown": "unknown key", "type": "must be a table"}


def context() -> dict:
    """What the file is checked against while it loads (`text`: the file; the catalog, for the policy and
    the experiments), set by `load_file`. A contextvar, so concurrent loads cannot see each other's."""
    return Context.get()


# --------------------------------------------------------------------------------------------- fields


class StrictField(fields.Field):
    """A value of exactly one TOML type; anything else is an error naming what was expected and what came."""

    default_error_messages = {"required": "required", "invalid": "must be {what}, got {input}"}
    what = "?"

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def convert(self, value: Any) -> Any:
        return value

    def _deserialize(self, value, attr, data, **kwargs):
        if not self.accepts(value):
            raise self.make_error("invalid", what=self.what, input=shown(value))
        return self.convert(value)


class Str(StrictField):
    what = "a string"

    def accepts(self, value):
        return isinstance(value, str)


class Int(StrictField):
    what = "an integer"

    def accepts(self, value):
        return isinstance(value, int) and not isinstance(value, bool)


class Number(StrictField):
    """An integer or a finite float (TOML allows `nan` and `inf`), loaded as a float."""

    what = "a number"

    def accepts(self, value):
        return is_number(value)

    def convert(self, value):
        return float(value)


class Bool(StrictField):
    what = "true or false"

    def accepts(self, value):
        return isinstance(value, bool)


class AwareDateTime(StrictField):
    """A TOML date-time with an offset; a local date-time would mean a different instant on each machine."""

    what = "a date-time with a time zone, e.g. 2026-12-01T00:00:00Z"

    def accepts(self, value):
        return isinstance(value, datetime) and value.tzinfo is not None


class StrList(StrictField):
    """An array of strings, loaded as a tuple; with `choices`, each one must be among them."""

    what = "an array of strings"
    default_error_messages = {"choice": "unknown value(s) {bad}; use some of {choices}"}

    def __init__(self, choices: Collection[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.choices = None if choices is None else tuple(choices)

    def accepts(self, value):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    def convert(self, value):
        if self.choices is not None:
            bad = [v for v in value if v not in self.choices]
            if bad:
                raise self.make_error("choice", bad=bad, choices=list(self.choices))
        return tuple(value)


class Entries(fields.Nested):
    """An array of tables (`[[offer]]`): each entry through `schema`, as a list. The schema's collection
    validators (`pass_collection=True`) see every entry, for the checks across entries."""

    default_error_messages = {"required": "required", "not_array": "must be an array of tables, e.g. {example}"}

    def __init__(self, schema: type[Schema], example: str, **kwargs) -> None:
        super().__init__(schema, many=True, **kwargs)
        self.example = example

    def _deserialize(self, value, attr, data, partial=None, **kwargs):
        if not isinstance(value, list):
            raise self.make_error("not_array", example=self.example)
        return list(super()._deserialize(value, attr, data, partial=partial, **kwargs))


class Table(fields.Nested):
    """A TOML table through its schema."""

    default_error_messages = {"required": "required"}


def is_number(value: Any) -> bool:
    """An integer or a finite float, and not a bool (which Python counts as an integer)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def shown(value: Any) -> str:
    """A value as TOML writes it (`true`, "50", [1, 2]), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, date | time):  # a datetime is a date
        return value.isoformat()
    return repr(value)


def at_least(low: float) -> validate.Range:
    return validate.Range(min=low, error="must be >= {min}, got {input!r}")


def above(low: float) -> validate.Range:
    return validate.Range(min=low, min_inclusive=False, error="must be > {min}, got {input!r}")


def one_of(choices: Collection[str]) -> validate.OneOf:
    return validate.OneOf(list(choices), error="must be one of {choices}, got {input!r}")


def non_empty(value: str) -> None:
    if not value:
        raise ValidationError("must not be empty")


def identifier(value: str) -> None:
    """An id that config files and the API use as a name: letters, digits and '_'."""
    if not value.isidentifier():
        raise ValidationError(f"must be an identifier (letters, digits, '_'), got {value!r}")


# --------------------------------------------------------------------------------------------- loading


def read_toml(path: Path, error: type[ConfigError], what: str) -> tuple[str, dict]:
    """(text, parsed) of a TOML file; an unreadable file or a syntax error is one clear error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{path}: cannot read the {what}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from exc


def load_file(path: Path, schema: Schema, error: type[ConfigError], what: str, label: Label, **checked_against):
    """The file loaded by `schema` (whose post_load builds its dataclasses), or `error` with every problem."""
    text, raw = read_toml(path, error, what)
    with Context({"text": text, **checked_against}):
        try:
            return schema.load(raw)
        except ValidationError as exc:
            raise error(*error_lines(path, exc.messages, raw, label)) from None


def error_lines(path: Path, messages: Any, raw: Any, label: Label) -> list[str]:
    """marshmallow's nested error messages as lines `<file>: <where>: <field>: <problem>`, in file order
    (entries by position; a table's own problems after its entries')."""
    out: list[str] = []

    def walk(node: Any, keys: tuple, where: list[str], field: list[str]) -> None:
        if isinstance(node, dict):
            items = sorted(enumerate(node.items()), key=lambda x: (0, x[1][0], 0) if isinstance(x[1][0], int)
                           else (1, 0, x[0]))
            for _, (key, value) in items:
                if key == "_schema":
                    walk(value, keys, where, field)
                    continue
                sub = (*keys, key)
                name = label(sub, _at(raw, sub))
                if name is None:
                    walk(value, sub, where, [*field, str(key)])
                else:
                    walk(value, sub, [*where, name], [])
        elif isinstance(node, list):
            for item in node:
                walk(item, keys, where, field)
        else:
            out.append(": ".join([str(path), *where, *([".".join(field)] if field else []), str(node)]))

    walk(messages, (), [], [])
    return out


def _at(raw: Any, keys: tuple) -> Any:
    for key in keys:
        if isinstance(raw, dict):
            raw = raw.get(key)
        elif isinstance(raw, list) and isinstance(key, int) and 0 <= key < len(raw):
            raw = raw[key]
        else:
            return None
    return raw


def name_of(entry: Any, key: str) -> str:
    """An entry's name for a label, e.g. the id of an [[offer]], or '?' if it has none."""
    value = entry.get(key) if isinstance(entry, dict) else None
    return "?" if value is None else str(value)
