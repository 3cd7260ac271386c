"""Dataset schemas and the coercion of incoming values to their declared types.

Owns `FieldType` (string, int, float, bool, timestamp), `Schema` (ordered fields, built from
the request's `schema` object with INVALID_SCHEMA errors) and `coerce`, the one rule book of
what each type accepts as is, what it converts (a coercion, counted per type) and what it
rejects (with a reason {field, expected, received}). Imports nothing from trio, quart or yaml.

The rules (the source names the types and nothing more; these are the emulator's):
- string: a JSON string as is; a number or boolean is converted to its JSON text (coercion).
- int: an integer as is; an integral float (3.0) or a decimal string ("42") converts.
- float: any finite number as is (JSON has one number type); a numeric string converts.
- bool: true/false as is; "true"/"false"/"yes"/"no"/"1"/"0" (any case) and 0/1 convert.
- timestamp: always a conversion, since JSON has no timestamp: an ISO 8601 string (date, or
  date and time with `Z` or an offset; no offset means UTC) or epoch seconds. Stored as
  `YYYY-MM-DDTHH:MM:SSZ` (with microseconds when present), in UTC.
- null or an absent field is a null (counted in null_pct), never a rejection.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import re
from collections.abc import Mapping

import attrs

from .errors import invalid_schema


class FieldType(enum.Enum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    TIMESTAMP = "timestamp"


TYPE_NAMES = "|".join(t.value for t in FieldType)
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_INT_TEXT = re.compile(r"^[+-]?\d{1,19}$")
_TRUE = frozenset({"true", "yes", "1", "t", "y"})
_FALSE = frozenset({"false", "no", "0", "f", "n"})
MAX_FIELDS = 256


def json_type_name(value: object) -> str:
    """How a received value is named in error details (`received`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@attrs.frozen
class Schema:
    """Field names in declaration order and their types."""

    fields: tuple[tuple[str, FieldType], ...]
    # The field names, kept once (every stored row becomes a record by zipping them).
    names: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(name for name, _ in self.fields))

    @classmethod
    def from_json(cls, data: object) -> Schema:
        if not isinstance(data, dict) or not data:
            raise invalid_schema(
                "schema", "object", json_type_name(data), "schema must be a non-empty object"
            )
        if len(data) > MAX_FIELDS:
            raise invalid_schema(
                "schema",
                f"at most {MAX_FIELDS} fields",
                f"{len(data)} fields",
                f"schema has {len(data)} fields; at most {MAX_FIELDS} are allowed",
            )
        fields = []
        for name, kind in data.items():
            if not _FIELD_NAME.match(name):
                raise invalid_schema(
                    str(name),
                    "a field name of letters, digits and _",
                    "string",
                    f"Field name {name!r} is not allowed (letters, digits and _, at most 128)",
                )
            try:
                field_type = FieldType(kind)
            except ValueError:
                received = kind if isinstance(kind, str) else json_type_name(kind)
                raise invalid_schema(
                    name,
                    TYPE_NAMES,
                    received,
                    f"Field '{name}' has unknown type {received!r}; use one of {TYPE_NAMES}",
                ) from None
            fields.append((name, field_type))
        return cls(tuple(fields))

    def to_json(self) -> dict[str, str]:
        return {name: kind.value for name, kind in self.fields}

    def type_of(self, name: str) -> FieldType | None:
        for field, kind in self.fields:
            if field == name:
                return kind
        return None


@attrs.frozen
class Rejection:
    """Why one value does not fit its field."""

    field: str
    expected: str
    received: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {
            "field": self.field,
            "expected": self.expected,
            "received": self.received,
            "message": self.message,
        }


class _Reject(Exception):
    pass


def _format_timestamp(moment: dt.datetime) -> str:
    moment = moment.astimezone(dt.UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _timestamp(value: object) -> str:
    if isinstance(value, bool):
        raise _Reject
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _Reject
        try:
            return _format_timestamp(dt.datetime.fromtimestamp(value, dt.UTC))
        except (OverflowError, OSError, ValueError):
            raise _Reject from None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise _Reject from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return _format_timestamp(moment)
    raise _Reject


def _convert(kind: FieldType, value: object) -> tuple[object, bool]:
    """The stored value and whether it was a coercion; raises _Reject."""
    if kind is FieldType.STRING:
        if isinstance(value, str):
            return value, False
        if isinstance(value, bool):
            return ("true" if value else "false"), True
        if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
            return repr(value), True
        raise _Reject
    if kind is FieldType.INT:
        if isinstance(value, bool):
            raise _Reject
        if isinstance(value, int):
            return value, False
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value), True
        if isinstance(value, str) and _INT_TEXT.match(value.strip()):
            return int(value.strip()), True
        raise _Reject
    if kind is FieldType.FLOAT:
        if isinstance(value, bool):
            raise _Reject
        if isinstance(value, int | float):
            if isinstance(value, float) and not math.isfinite(value):
                raise _Reject
            return float(value), False
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise _Reject from None
            if not math.isfinite(number):
                raise _Reject
            return number, True
        raise _Reject
    if kind is FieldType.BOOL:
        if isinstance(value, bool):
            return value, False
        if isinstance(value, int) and value in (0, 1):
            return bool(value), True
        if isinstance(value, str):
            word = value.strip().casefold()
            if word in _TRUE:
                return True, True
            if word in _FALSE:
                return False, True
        raise _Reject
    return _timestamp(value), True


def coerce(name: str, kind: FieldType, value: object) -> tuple[object, bool]:
    """`value` as `kind` and whether it was converted; raises CoercionError with the reason."""
    if value is None:
        return None, False
    try:
        return _convert(kind, value)
    except _Reject:
        received = json_type_name(value)
        raise CoercionError(
            Rejection(
                field=name,
                expected=kind.value,
                received=received,
                message=f"Field '{name}' expected {kind.value}, got {received}",
            )
        ) from None


@attrs.define(auto_exc=True, eq=False)
class CoercionError(Exception):
    rejection: Rejection


@attrs.define
class RowCheck:
    """Checks rows one at a time against a schema and keeps the DQ counters."""

    schema: Schema
    coercions: dict[str, int] = attrs.field(factory=dict)
    nulls: dict[str, int] = attrs.field(factory=dict)
    accepted: int = 0
    rejected: int = 0

    def check(self, row: object) -> tuple[tuple[object, ...] | None, tuple[Rejection, ...]]:
        """The row's stored values (in schema order), or None and every reason it is rejected.

        Counters change only for accepted rows (a rejected row's coercions do not count)."""
        if not isinstance(row, Mapping):
            self.rejected += 1
            received = json_type_name(row)
            return None, (
                Rejection("*", "object", received, f"A record must be an object, got {received}"),
            )
        reasons: list[Rejection] = []
        for key in row:
            if self.schema.type_of(str(key)) is None:
                reasons.append(
                    Rejection(
                        str(key),
                        "absent",
                        json_type_name(row[key]),
                        f"Field '{key}' is not in the dataset schema",
                    )
                )
        values: list[object] = []
        converted: list[str] = []
        for name, kind in self.schema.fields:
            try:
                value, was_coerced = coerce(name, kind, row.get(name))
            except CoercionError as error:
                reasons.append(error.rejection)
                continue
            values.append(value)
            if was_coerced:
                converted.append(kind.value)
        if reasons:
            self.rejected += 1
            return None, tuple(reasons)
        self.accepted += 1
        for kind_name in converted:
            self.coercions[kind_name] = self.coercions.get(kind_name, 0) + 1
        for (name, _), value in zip(self.schema.fields, values, strict=True):
            if value is None:
                self.nulls[name] = self.nulls.get(name, 0) + 1
        return tuple(values), ()

    def null_pct(self) -> dict[str, float]:
        """Per field, the percentage (0-100, two decimals) of accepted rows with a null."""
        if not self.accepted:
            return {name: 0.0 for name in self.schema.names}
        return {
            name: round(100.0 * self.nulls.get(name, 0) / self.accepted, 2)
            for name in self.schema.names
        }
