"""The filter language of ``query(filter=...)``, parsed into backend-neutral conditions.

A dict maps a field of the document's ``metadata`` to a condition; all conditions must hold:

- ``{"section": "python"}``            the field equals this value (str, int or bool);
- ``{"section": ["python", "libs"]}``  the field equals any of these (a non-empty list of str, or of int);
- ``{"size": {"gte": 10, "lt": 100}}`` a numeric range, keys among gt, gte, lt, lte.

Dotted keys (``"source.year"``) reach into nested metadata. Anything else raises ``ValueError``.
Each backend turns the conditions into its own filter type (store.edge, store.server).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

_FIELD_RE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
_RANGE_KEYS = {"gt", "gte", "lt", "lte"}


class Cond(NamedTuple):
    """One parsed filter condition: kind is "value", "any" or "range"."""

    key: str  # payload key, "metadata.<field>"
    kind: str
    value: Any


def parse_filter(filter: dict | None) -> list[Cond]:
    """Validate the filter language (module docstring) into backend-neutral conditions."""
    if not filter:
        return []
    if not isinstance(filter, dict):  # ValueError like every other filter error: the service answers 422
        raise ValueError(f"filter must map metadata fields to conditions, not {filter!r}")  # noqa: TRY004
    conds = []
    for name, cond in filter.items():
        if not isinstance(name, str) or not _FIELD_RE.match(name):
            raise ValueError(f"invalid filter field {name!r}: use letters, digits, '_' and '.' for nesting")
        key = f"metadata.{name}"
        if _is_match_scalar(cond):
            conds.append(Cond(key, "value", cond))
        elif isinstance(cond, list):
            if not cond or not (all(isinstance(v, str) for v in cond) or all(is_int(v) for v in cond)):
                raise ValueError(f"filter {name!r}: a list must be non-empty and all strings or all integers")
            conds.append(Cond(key, "any", list(cond)))
        elif isinstance(cond, dict):
            if not cond or not set(cond) <= _RANGE_KEYS or not all(_is_number(v) for v in cond.values()):
                raise ValueError(
                    f"filter {name!r}: a range is an object of numbers with keys among gt, gte, lt, lte"
                )
            conds.append(Cond(key, "range", {k: float(v) for k, v in cond.items()}))
        else:
            raise ValueError(
                f"filter {name!r}: expected a string, integer or boolean, a list of them, "
                f"or a range, got {cond!r}"
                + (" (use a range to compare floats)" if isinstance(cond, float) else "")
            )
    return conds


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_match_scalar(v: Any) -> bool:
    return isinstance(v, str | bool) or is_int(v)
