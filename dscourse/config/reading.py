"""Reading a config text: JSON first, then hjson (what DeepSpeed's file loader uses), with the line of every key.

Plain DeepSpeed loads a file with ``hjson.load`` (``DeepSpeedConfig.__init__``, deepspeed/runtime/config.py);
the Trainer and Accelerate load it with ``json.load`` after ``open(path, encoding="utf-8")``
(``HfDeepSpeedConfig.__init__``, accelerate/utils/deepspeed.py L142-143). What one accepts and the other
does not is reported: a warning for plain DeepSpeed, an error for the Trainer / Accelerate.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys

from .problem import ConfigReadError, Problem
from .targets import check_target, through_accelerate

BOM = "\ufeff"
_CONSTANTS = ("NaN", "Infinity", "-Infinity")
_NOT_JSON = ("plain DeepSpeed reads files with hjson and accepts it, the HF Trainer and Accelerate read them "
             "with json.load, which fails")
_STRICT_FIX = "`python -m dscourse.config strict FILE` prints the file as strict JSON"


class _Scan:
    """Comments, trailing commas, duplicate keys, non-finite numbers and the line of every key in a JSON/hjson text."""

    def __init__(self, text: str):
        self.comments: list[tuple[int, str]] = []  # (line, style)
        self.trailing_commas: list[int] = []
        self.duplicates: list[tuple[str, tuple[int, int], tuple[int, int]]] = []  # (path, (line, col) twice)
        self.non_finite: list[tuple[str, str, int]] = []  # (path, token, line): NaN, Infinity, 1e999
        self.key_lines: dict[str, int] = {}
        self._blank: list[tuple[int, int]] = []
        self._text = text
        with contextlib.suppress(Exception):  # a scan is a bonus (line numbers), never a failure
            self._structure(self._tokens(text))

    @property
    def stripped(self) -> str:
        """The text with comments and trailing commas turned into spaces (lines kept)."""
        chars = list(self._text)
        for start, end in self._blank:
            for i in range(start, min(end, len(chars))):
                if chars[i] != "\n":
                    chars[i] = " "
        return "".join(chars)

    def _tokens(self, text):
        """(kind, text, line, column, offset) of every token, one at a time (a 5 MB file stays small)."""
        i, line, line_start, n = 0, 1, 0, len(text)
        while i < n:
            c = text[i]
            col = i - line_start + 1
            if c == "\n":
                line, i, line_start = line + 1, i + 1, i + 1
            elif c in " \t\r" + BOM:
                i += 1
            elif c in "{}[]:,":
                yield c, c, line, col, i
                i += 1
            elif c in "\"'":
                j = _string_end(text, i)
                yield "str", text[i:j], line, col, i
                if "\n" in text[i:j]:
                    line, line_start = line + text.count("\n", i, j), text.rfind("\n", i, j) + 1
                i = j
            elif c == "#" or text.startswith("//", i):
                j = text.find("\n", i)
                j = n if j < 0 else j
                self.comments.append((line, "#" if c == "#" else "//"))
                self._blank.append((i, j))
                i = j
            elif text.startswith("/*", i):
                j = text.find("*/", i + 2)
                j = n if j < 0 else j + 2
                self.comments.append((line, "/* */"))
                self._blank.append((i, j))
                if "\n" in text[i:j]:
                    line, line_start = line + text.count("\n", i, j), text.rfind("\n", i, j) + 1
                i = j
            else:  # a number, true/false/null or an hjson bare word
                j = i + 1
                while j < n and text[j] not in "{}[]:,# \t\r\n\"'" and not text.startswith("//", j):
                    j += 1
                yield "bare", text[i:j], line, col, i
                i = j

    def _structure(self, tokens):
        stack = []  # frames: [kind, path, current key, array index, {key: (line, col)}]
        current = next(tokens, None)
        while current is not None:
            following = next(tokens, None)
            kind, value, line, col, pos = current
            nxt = following[0] if following else None
            current = following
            top = stack[-1] if stack else None
            if kind in "{[":
                stack.append([kind, _child(top), None, 0, {}])
            elif kind in "}]":
                if stack:
                    stack.pop()
            elif kind == ",":
                if nxt in ("}", "]"):
                    self.trailing_commas.append(line)
                    self._blank.append((pos, pos + 1))
                if top and top[0] == "[":
                    top[3] += 1
            elif nxt == ":" and top and top[0] == "{":
                key = _unquote(value)
                path = join(top[1], key)
                if key in top[4]:
                    self.duplicates.append((path, top[4][key], (line, col)))
                else:
                    top[4][key] = (line, col)
                    self.key_lines.setdefault(path, line)
                top[2] = key
            elif kind == "bare" and _non_finite(value):
                self.non_finite.append((_child(top) if top else "", value, line))

    def line_of(self, path: str) -> int | None:
        while path:
            if path in self.key_lines:
                return self.key_lines[path]
            path = path.rsplit(".", 1)[0] if "." in path else ""
        return None


def _non_finite(token: str) -> bool:
    if token in _CONSTANTS:
        return True
    if not any(c in token for c in ".eE") or len(token) > 5000:
        return False  # integers are exact in json and hjson, however long
    try:
        return math.isinf(float(token))  # 1e999: json.load reads infinity
    except ValueError:
        return False


def _string_end(text, i):
    quote, j = text[i], i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
        elif text[j] == quote:
            return j + 1
        else:
            j += 1
    return len(text)


def _unquote(token):
    if token[:1] == '"':
        try:
            return json.loads(token)
        except ValueError:
            return token.strip('"')
    return token.strip("'")


def _child(frame):
    if frame is None:
        return ""
    return join(frame[1], frame[2]) if frame[0] == "{" else f"{frame[1]}[{frame[3]}]"


def join(path, key):
    """The key path of ``key`` inside ``path`` ("zero_optimization" + "stage")."""
    return f"{path}.{key}" if path else str(key)




def type_name(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _plain(value):
    """hjson's OrderedDicts as plain dicts (order kept)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _too_long_integer(text: str, error: ValueError) -> ConfigReadError | None:
    """Python refuses to convert integers longer than sys.get_int_max_str_digits(); json and hjson both stop there."""
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    if not limit or "integer string conversion" not in str(error):
        return None
    match = re.search(rf"(?<![\w.\"'])\d{{{limit + 1},}}(?![\d.eE])", text)
    where = f"line {text.count(chr(10), 0, match.start()) + 1}: " if match else ""
    digits = f"of {len(match.group())} digits " if match else ""
    return ConfigReadError(f"{where}an integer {digits}is longer than the {limit} digits Python converts: json.load "
                           "(the Trainer, Accelerate) and DeepSpeed's hjson loader both raise ValueError 'Exceeds the "
                           "limit (4300 digits) for integer string conversion'; write a shorter number")


def _parse(text: str) -> tuple[object, bool]:
    """(value, strict JSON?). Raises ConfigReadError."""
    if not text.strip(BOM + " \t\r\n"):
        raise ConfigReadError("the file is empty: a DeepSpeed config is one JSON object, {...}")
    try:
        return json.loads(text), True
    except RecursionError:
        raise ConfigReadError("the JSON is nested too deeply to read") from None
    except json.JSONDecodeError as e:
        strict_error = e
    except ValueError as e:  # not a syntax error: a number Python will not convert
        raise (_too_long_integer(text, e) or ConfigReadError(f"not readable as JSON: {e}")) from None
    try:
        import hjson  # DeepSpeed's own loader; light and pure Python
    except ImportError:
        raise ConfigReadError(f"not valid JSON: {strict_error} (install hjson to read DeepSpeed's "
                              "looser syntax)") from None
    try:
        return _plain(hjson.loads(text)), False
    except RecursionError:
        raise ConfigReadError("the JSON is nested too deeply to read") from None
    except Exception as e:  # noqa: BLE001 - hjson raises several kinds
        where = (f" (line {getattr(e, 'lineno', strict_error.lineno)}, "
                 f"column {getattr(e, 'colno', strict_error.colno)})")
        reason = getattr(e, "msg", None) or strict_error.msg
        raise ConfigReadError(f"not valid JSON, nor hjson: {reason}{where}") from None


def read_config(text: str, target: str = "deepspeed") -> tuple[dict, list[Problem]]:
    """Parse a config text; report what only one of the two loaders accepts, and duplicate keys, as Problems.

    Comments, trailing commas and a byte-order mark load in plain DeepSpeed (hjson) but not in ``json.load``
    (the HF Trainer / Accelerate): a warning for ``target="deepspeed"``, an error for the others.
    """
    cfg, problems, _ = read(text, target)
    return cfg, problems


def read(text: str, target: str) -> tuple[dict, list[Problem], _Scan]:
    """read_config, and the scan that knows the line of every key."""
    check_target(target)
    severity = "error" if through_accelerate(target) else "warning"
    problems = []
    if text.startswith(BOM):
        problems.append(Problem("", "the file starts with a UTF-8 byte-order mark: DeepSpeed's hjson loader skips "
                                "it, but the HF Trainer and Accelerate read the file with json.load, which raises "
                                "'Unexpected UTF-8 BOM'", f"save the file as UTF-8 without a BOM ({_STRICT_FIX})",
                                1, severity))
        text = text[1:]
    value, strict = _parse(text)
    if isinstance(value, str) and not strict:  # hjson reads any text as one quoteless string
        try:
            json.loads(text)
        except ValueError as e:
            raise ConfigReadError(f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno}); "
                                  "hjson reads it as one bare string") from None
    if not isinstance(value, dict):
        raise ConfigReadError(f"the top level is {type_name(value)}, not a JSON object {{...}}")
    scan = _Scan(text)
    if not strict:
        problems += _syntax_problems(scan, severity)
    for path, token, line in scan.non_finite:
        if token in _CONSTANTS:
            why = (f"{token} is not JSON: json.load (the Trainer, Accelerate) reads it as a float {token}, DeepSpeed's "
                   "hjson loader reads the text as a string (or fails when more follows on the line)")
        else:
            why = (f"{token[:40]} is beyond a float's range: json.load (the Trainer, Accelerate) reads it as infinity, "
                   "DeepSpeed's hjson loader raises OverflowError")
        problems.append(Problem(path, why, "write a finite number", line))
    for path, (line1, col1), (line2, col2) in scan.duplicates:
        where = f"on line {line1}, columns {col1} and {col2}" if line1 == line2 else f"lines {line1} and {line2}"
        problems.append(Problem(path, f"given twice ({where}): json.load keeps the last one without a word, "
                                "DeepSpeed's file loader raises 'Duplicate keys'", "keep one of the two", line=line2))
    return value, problems, scan


def _syntax_problems(scan: _Scan, severity: str) -> list[Problem]:
    fix = f"delete it ({_STRICT_FIX})"
    problems = [Problem("", f"{style} comment is not JSON: {_NOT_JSON}", fix, line, severity)
                for line, style in scan.comments]
    problems += [Problem("", f"trailing comma is not JSON: {_NOT_JSON}", "delete the comma", line, severity)
                 for line in scan.trailing_commas]
    try:
        json.loads(scan.stripped)
    except json.JSONDecodeError as e:  # something else hjson-only: unquoted keys, single quotes, ...
        problems.append(Problem("", f"hjson-only syntax ({e.msg}): {_NOT_JSON}",
                                f"quote every key and string with double quotes ({_STRICT_FIX})", e.lineno, severity))
    except (ValueError, RecursionError):
        pass
    return problems


def to_strict_json(text: str) -> str:
    """The config as strict JSON (2-space indent, key order kept, comments and byte-order mark dropped)."""
    cfg, _ = read_config(text)
    return json.dumps(cfg, indent=2, ensure_ascii=False)
