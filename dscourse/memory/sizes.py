"""Parse parameter counts ("7.5B", "13b", "7.5e9", "350M") and format byte counts."""

from __future__ import annotations

import math
import re

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_COUNT = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)


def parse_count(text) -> int:
    """A parameter count from ``7.5e9``, ``7.5B``, ``13B``, ``70b``, ``350M``, ``1_000`` or an int.

    Raises ``ValueError`` with a message that says what is accepted.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a parameter count: {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _COUNT.match(str(text).replace("_", ""))
        if not m:
            raise ValueError(f"not a parameter count: {text!r} (write e.g. 7.5e9, 7.5B, 13B, 70b or 350M)")
        value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a parameter count must be a positive number, not {text!r}")
    return int(round(value))


def format_bytes(n: float | None, unit: str = "GB") -> str:
    """``n`` bytes in decimal GB (1e9, as the ZeRO paper counts) or GiB (2**30), or '—' for no answer."""
    if n is None:
        return "—"
    div = {"GB": 1e9, "GiB": 2**30, "MB": 1e6, "MiB": 2**20}[unit]
    return f"{n / div:,.2f} {unit}"


_BYTES = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib|k|m|g|t)?\s*$", re.IGNORECASE)
_BYTE_UNITS = {"b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
               "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text) -> int:
    """A memory size from ``80GB``, ``80G``, ``141e9``, ``512GiB`` (GB = 10^9 bytes, GiB = 2^30)."""
    m = _BYTES.match(str(text))
    if not m:
        raise ValueError(f"not a memory size: {text!r} (write e.g. 80GB, 24G, 512GiB)")
    value = float(m.group(1)) * _BYTE_UNITS[(m.group(2) or "b").lower()]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a memory size must be positive, not {text!r}")
    return int(value)
