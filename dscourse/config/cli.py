"""``python -m dscourse.config``: check a DeepSpeed config, or print it as strict JSON.

    python -m dscourse.config check ds_config.json --for hf --world-size 8
    python -m dscourse.config strict ds_config.json > ds_config.strict.json

Exit codes: 0 fine (warnings and notes may be printed), 1 errors found (one line each, on stdout; the first
50 problems and a count of the rest), 2 unreadable file or bad arguments (one line on stderr). Never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..cli_util import OneLineParser, UsageError, positive_int
from .check import TARGETS, ConfigReadError, check_text, implied_world_size, to_strict_json

PROG = "python -m dscourse.config"
SHOWN = 50  # problems printed; a file with 275,000 unknown keys gets 50 lines and a count


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="Check DeepSpeed JSON configs more strictly than DeepSpeed does.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{check,strict}")
    check = sub.add_parser("check", help="list the problems in a config, one line each")
    check.add_argument("file")
    check.add_argument("--for", dest="target", choices=sorted(TARGETS), default="deepspeed",
                       help="deepspeed: plain deepspeed.initialize; hf: the Hugging Face Trainer, which fills "
                            "\"auto\" itself and through Accelerate; accelerate: Accelerate without the Trainer "
                            "(both read the file with json.load)")
    check.add_argument("--world-size", type=positive_int, default=None,
                       help="number of GPUs (processes) in the job, to check the batch arithmetic; DeepSpeed "
                            "divides them by sequence_parallel_size into data-parallel ranks")
    strict = sub.add_parser("strict", help="print the config as strict JSON (comments and trailing commas dropped)")
    strict.add_argument("file")
    return p


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise ConfigReadError("not UTF-8 text") from None
    except OSError as e:
        raise ConfigReadError(e.strerror or str(e)) from None


def _check(args) -> int:
    cfg, problems = check_text(_read_text(args.file), args.target, args.world_size)
    for p in problems[:SHOWN]:
        print(f"{p.severity}: {p}")
    if len(problems) > SHOWN:
        print(f"... and {len(problems) - SHOWN} more problem(s) not shown")
    counts = {s: sum(p.severity == s for p in problems) for s in ("error", "warning", "note")}
    what = TARGETS[args.target]
    if counts["error"]:
        print(f"{args.file}: {counts['error']} error(s), {counts['warning']} warning(s) for {what}")
        return 1
    implied = implied_world_size(cfg) if args.world_size is None else None
    notes = [f"{counts[s]} {s}(s)" for s in ("warning", "note") if counts[s]]
    if implied:
        notes.append(f"the batch numbers imply a world size of {implied}")
    print(f"{args.file}: fine for {what}" + (f" ({'; '.join(notes)})" if notes else ""))
    return 0


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "strict":
            print(to_strict_json(_read_text(args.file)))
            return 0
        return _check(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except ConfigReadError as e:
        print(f"{PROG}: cannot read {getattr(args, 'file', 'the file')}: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader closed the pipe (| head): nothing more to say
        sys.stdout = None
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the contract is one line, never a traceback
        message = " ".join(str(e).split())
        print(f"{PROG}: internal error: {type(e).__name__}: {message}", file=sys.stderr)
        return 2
