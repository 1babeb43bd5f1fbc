"""What the checker reports: one Problem per line, and the error for text that is not a config at all."""

from __future__ import annotations

from dataclasses import dataclass

# error: the run fails or silently does something else; warning: a setting that does nothing or is risky;
# note: harmless, said so that nobody wonders (a comment key, a value the Trainer fills only for itself).
SEVERITIES = ("error", "warning", "note")


@dataclass
class Problem:
    path: str  # key path such as "zero_optimization.offload_param.device"; "" for the whole file
    message: str  # why it is a problem
    fix: str  # what to write instead
    line: int | None = None
    severity: str = "error"  # one of SEVERITIES

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        text = f"{where}{self.path or '(file)'}: {self.message} — {self.fix}"
        return " ".join(text.split())  # always one line, whatever DeepSpeed's messages contain


class ConfigReadError(ValueError):
    """The text is neither JSON nor hjson, or its top level is not an object."""
