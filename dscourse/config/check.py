"""Check a DeepSpeed JSON config more strictly than DeepSpeed 0.19.8 does.

DeepSpeed ignores unknown top-level keys, keeps ``offload_param`` under ZeRO-2 without a word and
fails on ``"auto"`` with a TypeError that names no key. This module names the key, says why it is a
problem and what to write instead, for plain ``deepspeed.initialize`` (``target="deepspeed"``), for
the Hugging Face Trainer (``target="hf"``, which goes through Accelerate) or for Accelerate alone
(``target="accelerate"``): those two fill ``"auto"`` in some keys (``hf_fills``) and read the file
with ``json.load``.

What DeepSpeed reads is in ``deepspeed_reads``, what the Trainer and Accelerate fill in ``hf_fills``,
what DeepSpeed removed in ``removed``; reading the text (lines, comments, duplicates) is ``reading``.
Pure Python at import: DeepSpeed (and torch) are imported on first use.
"""

from __future__ import annotations

import difflib
import json
import math

from . import hf_fills
from .deepspeed_reads import (
    DS_NATIVE_AUTO,
    FRIENDLY_DEPRECATED,
    OPT_BOOLS,
    OPT_NUMBERS,
    SCHED_NUMBERS,
    SECTIONS,
    TOP_LEVEL_KEYS,
    TOP_TYPES,
    ZERO_OPTIMIZER_ONLY,
    field_at,
    field_types,
    fields,
    quiet,
    submodel,
    tables,
    zero_default_stage,
)
from .problem import SEVERITIES, ConfigReadError, Problem
from .reading import join, read, read_config, to_strict_json, type_name
from .removed import (
    ONEBIT_PARAMS,
    REJECTED_VALUES,
    REMOVED_OPTIMIZERS,
    REMOVED_TOP,
    REMOVED_ZERO,
    removed_fix,
    removed_message,
)
from .targets import TARGETS, check_target, through_accelerate
from .verdict import deepspeed_verdict

__all__ = ["TARGETS", "ConfigReadError", "Problem", "check_config", "check_text", "data_parallel_ranks",
           "deepspeed_verdict", "implied_world_size", "read_config", "to_strict_json", "zero_default_stage"]

BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
SUGGEST_CUTOFF = 0.8  # difflib ratio: "zero_optimisation" -> "zero_optimization" (0.94), not "_comment" -> "comet"
SUGGEST_BUDGET = 200  # spelling suggestions per config: difflib for 275,000 unknown keys would take a minute


def check_config(cfg_or_text, target: str = "deepspeed", world_size: int | None = None) -> list[Problem]:
    """Every problem found in a config (a dict, or JSON/hjson text): errors, warnings and notes.

    ``world_size`` is the number of GPUs (processes); DeepSpeed's data-parallel ranks are derived from it
    (:func:`data_parallel_ranks`). Text that cannot be read raises ConfigReadError; anything else comes back as
    Problems, sorted by line.
    """
    return check_text(cfg_or_text, target, world_size)[1] if isinstance(cfg_or_text, str) else \
        _check(cfg_or_text, target, world_size)


def check_text(text: str, target: str = "deepspeed", world_size: int | None = None) -> tuple[dict, list[Problem]]:
    """(the config read from ``text``, its problems): the text is read once, its lines kept for the problems."""
    check_target(target)
    cfg, problems, scan = read(text, target)
    problems = _check(cfg, target, world_size, problems)
    for p in problems:
        if p.line is None:
            p.line = scan.line_of(p.path)
    return cfg, sorted(problems, key=lambda p: (p.line is None, p.line or 0))


def _check(cfg, target, world_size, problems=()) -> list[Problem]:
    check_target(target)
    if world_size is not None and (isinstance(world_size, bool) or not isinstance(world_size, int)
                                   or world_size < 1):
        raise ValueError(f"world_size must be a whole number >= 1, not {world_size!r}")
    if not isinstance(cfg, dict):
        return [Problem("", f"the top level is {type_name(cfg)}, not an object",
                        "write the config as one JSON object {...}")]
    ctx = _Ctx(cfg, target, world_size)
    ctx.flagged.update(p.path for p in problems if p.severity == "error" and p.path)  # NaN, duplicates: said once
    for check in _CHECKS:
        try:
            check(ctx)
        except Exception as e:  # noqa: BLE001 - a bug in one check must not hide the others
            ctx.error("", f"internal checker error in {check.__name__}: {type(e).__name__}: {e}",
                      "please report it; the other checks still ran")
    return _dedupe([*problems, *ctx.problems])


def data_parallel_ranks(cfg, gpus: int) -> tuple[int | None, str]:
    """(data-parallel ranks DeepSpeed divides the batch over, how it got them) for ``gpus`` processes.

    ``DeepSpeedConfig.__init__`` (deepspeed/runtime/config.py L464-471): with ``data_parallel_size`` and
    ``sequence_parallel_size`` both given, deepspeed.initialize builds a (data, sequence) mesh and the data
    axis is ``data_parallel_size``; with ``sequence_parallel_size`` alone it is GPUs / sequence_parallel_size.
    None when the numbers do not fit the GPUs.
    """
    sp = _whole(cfg.get("sequence_parallel_size")) if isinstance(cfg, dict) else None
    dp = _whole(cfg.get("data_parallel_size")) if isinstance(cfg, dict) else None
    if not sp or sp < 1 or sp == 1 and not dp:
        return gpus, f"{gpus} GPU(s)"
    if dp and dp >= 1:
        ok = dp * sp == gpus
        return (dp if ok else None), f"data_parallel_size {dp} (× sequence_parallel_size {sp} = {dp * sp} GPUs)"
    ok = gpus % sp == 0
    return (gpus // sp if ok else None), f"{gpus} GPUs / sequence_parallel_size {sp}"


def implied_world_size(cfg) -> int | None:
    """The number of GPUs the three batch numbers imply (train = micro × accumulation × data-parallel ranks)."""
    if not isinstance(cfg, dict):
        return None
    values = [_whole(cfg.get(k)) for k in BATCH_KEYS]
    if None in values or min(values) < 1:
        return None
    train, micro, accum = values
    if train % (micro * accum):
        return None
    ranks = train // (micro * accum)
    sp = _whole(cfg.get("sequence_parallel_size"))
    return ranks * sp if sp and sp > 1 else ranks


class _Ctx:
    def __init__(self, cfg: dict, target: str, world_size: int | None):
        self.cfg, self.target, self.world_size = cfg, target, world_size
        self.accelerate = through_accelerate(target)  # json.load, the DeepSpeed plugin, Accelerate's fills
        self.trainer = target == "hf"  # and the Trainer's fills too
        self.ds = tables()
        self.problems: list[Problem] = []
        self.flagged: set[str] = set()  # paths already reported as errors
        self.suggestions_left = SUGGEST_BUDGET
        self.stage = _stage(cfg.get("zero_optimization"))

    def error(self, path, message, fix):
        self.flagged.add(path)
        self.problems.append(Problem(path, message, fix, severity="error"))

    def warn(self, path, message, fix):
        self.problems.append(Problem(path, message, fix, severity="warning"))

    def note(self, path, message, fix):
        self.problems.append(Problem(path, message, fix, severity=SEVERITIES[2]))


def _dedupe(problems):
    seen, out = set(), []
    for p in problems:
        if (p.path, p.message, p.line) not in seen:
            seen.add((p.path, p.message, p.line))
            out.append(p)
    return out


def _whole(value) -> int | None:
    """value as an int if it is a JSON integer (or an integral float such as 2e8), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric_text(value) -> float | None:
    """A string that spells a number ("2e8", "1e-4"), as a number."""
    if not isinstance(value, str) or len(value) > 100:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _literal(number) -> str:
    whole = _whole(number)
    return str(whole) if whole is not None else repr(number)


def _short(value, limit=40) -> str:
    """A value as JSON, cut for a message (an integer of 4,000 digits stays one short line)."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def _stage(zero) -> int | None:
    """The ZeRO stage DeepSpeed will run, or None when the config says something invalid."""
    if zero is None:
        return 0
    if isinstance(zero, bool):  # the deprecated "zero_optimization": true form means stage 1
        return int(zero)
    if not isinstance(zero, dict):
        return None
    if "stage" not in zero:
        return zero_default_stage()
    stage = _whole(zero["stage"])
    return stage if stage in (0, 1, 2, 3) else None


def _suggest(word, candidates, ctx=None) -> str:
    if ctx is not None:
        if ctx.suggestions_left <= 0:
            return ""
        ctx.suggestions_left -= 1
    lowered = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=SUGGEST_CUTOFF)
    return lowered[match[0]] if match else ""


def _unknown(ctx, path, key, candidates, consequence):
    match = _suggest(key, candidates, ctx)
    fix = f'did you mean "{match}"?' if match else "remove it (see the DeepSpeed config docs for the valid keys)"
    ctx.error(path, f'unknown key "{key}": {consequence}', fix)


def _is_comment(key) -> bool:
    """A key such as "_comment" or "__note__": written as a comment, never a DeepSpeed setting."""
    return isinstance(key, str) and key.startswith("_")


def _comment_note(ctx, path, reader):
    ctx.note(path, f"a comment key: {reader} ignores it", "nothing to do")


# --- 1. keys --------------------------------------------------------------------------------

def _check_top_keys(ctx):
    for key in ctx.cfg:
        if key in REMOVED_TOP:
            version, replacement = REMOVED_TOP[key]
            ctx.error(key, removed_message(version), removed_fix(replacement))
        elif _is_comment(key):
            _comment_note(ctx, key, "DeepSpeed reads only the top-level keys it knows and")
        elif key not in TOP_LEVEL_KEYS:
            consequence = "DeepSpeed ignores unknown top-level keys silently, so this setting has no effect"
            if "zero_optimization" not in ctx.cfg and _suggest(key, ["zero_optimization"], ctx):
                consequence = ("DeepSpeed ignores unknown top-level keys silently, so ZeRO stays OFF "
                               f"(stage {zero_default_stage()}) and every GPU holds the full model states")
            _unknown(ctx, key, key, TOP_LEVEL_KEYS, consequence)
    if ctx.accelerate and hf_fills.REQUIRED_SECTION not in ctx.cfg:
        ctx.error(hf_fills.REQUIRED_SECTION, hf_fills.REQUIRED_MESSAGE, 'add "zero_optimization": {"stage": 0} '
                  "(or the stage you want)")
    if "bfloat16" in ctx.cfg:
        if "bf16" in ctx.cfg:
            ctx.warn("bfloat16", 'DeepSpeed reads "bf16" and ignores "bfloat16" when both are present',
                     'delete "bfloat16"')
        elif ctx.accelerate:
            ctx.error("bfloat16", 'old spelling: the Trainer reads only "bf16.enabled" for the model dtype, and '
                      'Accelerate adds a "bf16" section (set_mixed_precision, accelerate/utils/dataclasses.py '
                      'L1438-1441) that DeepSpeed reads instead of "bfloat16"', 'rename it to "bf16"')
        else:
            ctx.warn("bfloat16", "deprecated spelling, kept for backwards compatibility", 'rename it to "bf16"')


def _check_sections_are_objects(ctx):
    for key in SECTIONS & set(ctx.cfg):
        value = ctx.cfg[key]
        if isinstance(value, dict):
            continue
        if key == "zero_optimization" and isinstance(value, bool):
            ctx.warn(key, f"deprecated boolean form: DeepSpeed reads {json.dumps(value)} as stage "
                     f"{int(value)}", f'write "zero_optimization": {{"stage": {int(value)}}}')
        elif value is not None or key != "aio":  # only the aio reader copes with null
            ctx.error(key, f"must be an object {{...}}, not {type_name(value)}: DeepSpeed reads keys "
                      "out of it and fails", f'write "{key}": {{...}}, or delete it')


def _check_plain_sections(ctx):
    """Sections DeepSpeed reads with dict.get: a misspelt key there is silently ignored."""
    if not ctx.ds:
        return
    for section, known in ctx.ds["plain_sections"].items():
        body = ctx.cfg.get(section)
        for key in body if isinstance(body, dict) else ():
            if _is_comment(key):
                _comment_note(ctx, join(section, key), f"DeepSpeed reads only its own keys from {section} and")
            elif key not in known:
                _unknown(ctx, join(section, key), key, known,
                         f"DeepSpeed reads only its own keys from {section} and ignores this one")


# --- 2 and 5. sections with pydantic models ----------------------------------------------------

def _check_model_sections(ctx):
    if not ctx.ds:
        ctx.warn("", "DeepSpeed cannot be imported here, so section values were not validated",
                 "install deepspeed and check again")
        return
    for section, model in ctx.ds["models"].items():
        body = ctx.cfg.get(section)
        if isinstance(body, dict):
            clean = _walk_model(ctx, section, body, model)
            _validate(ctx, section, clean, model)


def _walk_model(ctx, path, body: dict, model) -> dict:
    """Report unknown keys, deprecated spellings, quoted numbers/booleans; return what to validate."""
    known = fields(model)
    clean, seen = {}, {}
    for key, value in body.items():
        p = join(path, key)
        if path == "zero_optimization" and key in REMOVED_ZERO:
            version, replacement = REMOVED_ZERO[key]
            ctx.error(p, removed_message(version), removed_fix(replacement, "the key"))
            continue
        if key not in known:
            if _is_comment(key):
                ctx.error(p, "a comment key, but not here: DeepSpeed's model for this section forbids unknown keys "
                          "(pydantic ValidationError: extra inputs are not permitted)",
                          'move the comment to the top level, e.g. "_comment": "..."')
                continue
            preferred = [k for k, (n, i) in known.items() if i.alias is None or k == i.alias]
            _unknown(ctx, p, key, preferred, "DeepSpeed's own model for this section rejects it "
                     "(pydantic ValidationError: extra inputs are not permitted)")
            continue
        name, info = known[key]
        if name in seen:
            ctx.error(p, f'the same setting as "{seen[name]}", given twice under two spellings',
                      "keep one of them")
            continue
        seen[name] = key
        extra = info.json_schema_extra or {}
        if isinstance(extra, dict) and extra.get("deprecated"):
            modern = FRIENDLY_DEPRECATED.get(key) or f'"{extra.get("new_param", "")}"'
            ctx.warn(p, "deprecated: DeepSpeed still accepts it and logs a warning", f"write {modern} instead")
        if value == "auto":
            continue  # the "auto" check reports it; DeepSpeed drops "auto" before validating
        sub = submodel(info)
        if sub is not None and isinstance(value, dict):
            clean[key] = _walk_model(ctx, p, value, sub)
        elif _scalar_ok(ctx, p, value, field_types(info), info):
            clean[key] = value
    return clean


def _scalar_ok(ctx, path, value, types, info) -> bool:
    """Strings and booleans where a number or boolean belongs (pydantic would coerce some)."""
    classes = [t for t in types if isinstance(t, type)]
    wants_bool = bool in classes
    wants_number = any(issubclass(t, (int, float)) and t is not bool for t in classes)  # incl. int enums
    if any(issubclass(t, str) for t in classes) or not (wants_bool or wants_number):
        return True
    if isinstance(value, str):
        number = _numeric_text(value)
        if wants_bool and value.strip().lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            spelled = "true" if value.strip().lower() in ("true", "yes", "on", "1") else "false"
            ctx.error(path, f'a boolean written as the string "{value}": DeepSpeed\'s model coerces it, '
                      'but a plain truth test (the HF Trainer\'s is_true, your scripts) reads any '
                      'non-empty string, "false" too, as true', f"write {spelled} without quotes")
        elif wants_number and number is not None:
            ctx.error(path, f'a number written as the string "{value}": DeepSpeed wants a JSON number '
                      f"(pydantic rejects \"2e8\"-style strings outright)", f"write {_literal(number)} without quotes")
        else:
            return True  # not a number at all: pydantic's own message is the clearest
        return False
    if isinstance(value, bool) and wants_number and not wants_bool:
        ctx.error(path, f"{json.dumps(value)} is a boolean where DeepSpeed expects a number (this is not an on/off "
                  f"switch): pydantic silently turns it into {int(value)}", _number_fix(path, info))
        return False
    if wants_bool and not wants_number and value in (0, 1) and not isinstance(value, bool):
        ctx.warn(path, f"{value} where DeepSpeed expects a boolean (accepted as {bool(value)})",
                 f"write {json.dumps(bool(value))}")
    return True


def _number_fix(path, info) -> str:
    if path == "zero_optimization.stage":
        return "write 0, 1, 2 or 3"
    default = getattr(info, "default", None)
    if _is_number(default) and not isinstance(default, bool):
        return f"write a number, e.g. DeepSpeed's default {int(default)}, or delete the key to get that default"
    return "write a number, or delete the key to get DeepSpeed's default"


def _validate(ctx, path, clean: dict, model):
    import pydantic

    try:
        with quiet():
            model(**clean)
    except pydantic.ValidationError as e:
        for err in e.errors():
            loc = ".".join(str(part) for part in err.get("loc", ()))
            p = join(path, loc) if loc else path
            if p in ctx.flagged:
                continue
            value = err.get("input")
            rejected = REJECTED_VALUES.get((p, value)) if type(value) in (int, float, str) else None
            if rejected:
                version, rule, fix = rejected
                ctx.error(p, f"{_short(value)} is rejected since DeepSpeed {version}, which {rule} (older releases "
                          "accepted it: this file was written for one)", fix)
            else:
                ctx.error(p, _pydantic_message(err), _pydantic_fix(err, p))
    except Exception as e:  # noqa: BLE001 - DeepSpeed's validators raise AssertionError, TypeError, ...
        ctx.error(path, f"DeepSpeed's model rejects this section: {type(e).__name__}: {_short(str(e), 200)}",
                  "fix the value the message names")


def _pydantic_message(err) -> str:
    if err.get("loc") == ("stage",) and err.get("type") == "enum":  # pydantic lists "0, 1, 2, 3 or 3"
        return f"DeepSpeed rejects it: the ZeRO stage is 0, 1, 2 or 3 (got {_short(err.get('input'))})"
    message = err.get("msg", "invalid value")
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.replace(prefix, "")
    if err.get("type") not in ("value_error", "assertion_error") and "input" in err:
        message += f" (got {_short(err['input'], 60)})"
    return "DeepSpeed rejects it: " + message


def _pydantic_fix(err, path) -> str:
    kind, ctx = err.get("type", ""), err.get("ctx") or {}
    if path.endswith("zero_optimization.stage"):
        return "write 0, 1, 2 or 3"
    if kind == "enum":
        return f"write one of {ctx.get('expected', 'the listed values')}"
    if kind.startswith("int"):
        return "write a whole number without quotes"
    if kind.startswith("float"):
        return "write a number without quotes"
    if kind.startswith("bool"):
        return "write true or false without quotes"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()), "the limit")
        return f"write a value {bounds[kind]} {limit}"
    return "change the value as the message says"


# --- 3. options that do nothing at the chosen stage -------------------------------------------

def _offloads(zero, key) -> bool:
    """True when zero[key] really asks for an offload (device cpu or nvme)."""
    section = zero.get(key)
    return isinstance(section, dict) and section.get("device") in ("cpu", "nvme")


def _stage3_only(ctx, key) -> bool:
    if key.startswith("stage3_"):
        return True
    if not ctx.ds:
        return False
    info = ctx.ds["models"]["zero_optimization"].model_fields.get(key)
    return bool(info and info.alias and info.alias.startswith("stage3_"))


def _autotp(cfg) -> int:
    """tensor_parallel.autotp_size: above 1, AutoTP shards the weights whatever the ZeRO stage."""
    tp = cfg.get("tensor_parallel")
    size = _whole(tp.get("autotp_size")) if isinstance(tp, dict) else None
    return size or 0


# Read outside ZeRO-3 too when AutoTP shards the weights: DeepSpeedEngine.save_16bit_model and
# _consolidated_16bit_state_dict (deepspeed/runtime/engine.py L5605-5613), Accelerator.get_state_dict
# (accelerate/accelerator.py L4071-4090, which raises ValueError when it is false).
_AUTOTP_READS = frozenset({"gather_16bit_weights_on_model_save"})


def _check_stage(ctx):
    zero = ctx.cfg.get("zero_optimization")
    if not isinstance(zero, dict) or ctx.stage is None:
        return
    others = [k for k in zero if k != "stage" and not _is_comment(k)]
    if "stage" not in zero and others:
        wanted = 3 if _offloads(zero, "offload_param") or any(_stage3_only(ctx, k) for k in others) else 2
        listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        ctx.error("zero_optimization.stage", f"missing: DeepSpeed defaults to stage {ctx.stage}, so ZeRO is OFF "
                  f"and the other keys here ({listed}) have no effect", f'add "stage": {wanted}')
        return
    stage = ctx.stage
    for key in others:
        p = join("zero_optimization", key)
        if key == "offload_param" and stage < 3 and _offloads(zero, key):
            ctx.error(p, f"parameter offload needs ZeRO-3: at stage {stage} DeepSpeed accepts it silently and "
                      "keeps every parameter on every GPU", 'set "stage": 3, or delete offload_param')
        elif key == "offload_optimizer" and stage == 0 and _offloads(zero, key):
            ctx.error(p, "optimizer offload needs ZeRO stage 1-3: at stage 0 there is no ZeRO optimizer, so "
                      "nothing is offloaded", 'set "stage": 1, 2 or 3, or delete offload_optimizer')
        elif stage < 3 and _stage3_only(ctx, key):
            if _autotp(ctx.cfg) > 1 and _field_name(ctx, key) in _AUTOTP_READS:
                continue  # AutoTP reads it at every stage
            ctx.warn(p, f"only ZeRO-3 reads it: at stage {stage} it does nothing",
                     "delete it, or set \"stage\": 3")
        elif stage == 0 and key in ZERO_OPTIMIZER_ONLY:
            ctx.warn(p, "only the ZeRO optimizer reads it: at stage 0 it does nothing",
                     'delete it, or set "stage" to 1, 2 or 3')


def _field_name(ctx, key) -> str:
    """The ZeRO field a spelling stands for (an alias such as stage3_... -> its field name)."""
    entry = fields(ctx.ds["models"]["zero_optimization"]).get(key) if ctx.ds else None
    return entry[0] if entry else key


# --- 4. "auto" --------------------------------------------------------------------------------

def _leaves(value, path="", in_list=False):
    """(path, value, inside a list?) for every scalar in the config."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, join(path, key), in_list)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]", True)
    else:
        yield path, value, in_list


def _auto_consequence(ctx, path) -> str:
    """What plain DeepSpeed 0.19.8 does with "auto" at ``path``."""
    section, _, key = path.partition(".")
    if path in BATCH_KEYS:
        return ("plain deepspeed.initialize does batch arithmetic on the string and fails with a "
                "TypeError about 'str' and 'int' that names no key")
    if section in ("optimizer", "scheduler") and key.startswith("params."):
        return f"DeepSpeed passes the string to the {section} constructor, which fails"
    info = field_at(ctx.ds["models"][section], key) if ctx.ds and section in ctx.ds["models"] and key else None
    if info is not None:  # DeepSpeedConfigModel.__init__ drops "auto" at every level (runtime/config_utils.py L56)
        if not info.is_required() and info.default_factory is None:
            return f"DeepSpeed silently drops it and uses its default, {_short(info.default, 60)}"
        return "DeepSpeed silently drops it and uses its default"
    return 'DeepSpeed takes the string "auto" as the value'


def _auto_fix(ctx, path) -> str:
    section, _, key = path.partition(".")
    info = field_at(ctx.ds["models"][section], key) if ctx.ds and section in ctx.ds["models"] and key else None
    types = [t for t in field_types(info) if isinstance(t, type)] if info is not None else []
    if bool in types or path.endswith(".enabled"):
        return "write true or false"
    if path == "optimizer.params.betas":
        return "write two numbers, e.g. [0.9, 0.999]"
    numeric = any(issubclass(t, (int, float)) for t in types) or path in BATCH_KEYS or path in TOP_TYPES \
        and TOP_TYPES[path] in ("number", "count") or key.removeprefix("params.") in (*OPT_NUMBERS, *SCHED_NUMBERS)
    return "write the number" if numeric else "write the value itself"


def _check_auto(ctx):
    autotuner = isinstance(ctx.cfg.get("autotuning"), dict) and ctx.cfg["autotuning"].get("enabled") is True
    for path, value, in_list in _leaves(ctx.cfg):
        if value != "auto" or path in ctx.flagged:
            continue
        if autotuner and path in BATCH_KEYS:
            continue  # DeepSpeed's autotuner fills these
        if ctx.accelerate:
            _check_auto_filled(ctx, path, in_list)
        elif path in DS_NATIVE_AUTO:
            continue
        elif path in hf_fills.FILLS:
            who = "a Hugging Face Trainer" if hf_fills.FILLS[path].trainer else "an Accelerate"
            ctx.error(path, f'"auto" is {who} placeholder: {_auto_consequence(ctx, path)}',
                      f"{_auto_fix(ctx, path)} (or check with --for hf if the HF Trainer reads this file)")
        else:
            ctx.error(path, f'"auto" is a Hugging Face placeholder, and neither the Trainer nor Accelerate fills '
                      f"this key: {_auto_consequence(ctx, path)}", _auto_fix(ctx, path))


def _check_auto_filled(ctx, path, in_list):
    if path in hf_fills.OVERWRITTEN:
        return  # replaced before Accelerate looks for leftovers
    fill = hf_fills.filled(path, ctx.trainer)
    if fill is not None:
        if fill.alone and not ctx.trainer:
            ctx.note(path, f'Accelerate fills "auto" here ({fill.value}) {fill.alone}; otherwise '
                     f"{hf_fills.leftover_consequence(path)}", fill.alone_fix)
        return
    if in_list:  # Accelerate walks objects only: the string reaches DeepSpeed
        ctx.error(path, f'"auto" inside a list is not filled by the Trainer or Accelerate: '
                  f"{_auto_consequence(ctx, path)}", _auto_fix(ctx, path))
        return
    if path in hf_fills.FILLS:  # filled by the Trainer only
        ctx.error(path, f'"auto" here is filled by the HF Trainer ({hf_fills.FILLS[path].value}), not by Accelerate '
                  f"alone: {hf_fills.leftover_consequence(path)}", _auto_fix(ctx, path))
        return
    native = " (though it is DeepSpeed's own value here)" if path in DS_NATIVE_AUTO else ""
    twin = _filled_spelling(ctx, path)
    fix = f'rename it to "{twin}"' if twin else _auto_fix(ctx, path)
    ctx.error(path, f'neither the Trainer nor Accelerate fills "auto" here{native}: '
              f"{hf_fills.leftover_consequence(path)}", fix)


def _filled_spelling(ctx, path) -> str:
    """The spelling Accelerate fills for the same ZeRO field ("prefetch_bucket_size" -> "stage3_prefetch_...")."""
    section, _, key = path.partition(".")
    if section != "zero_optimization" or "." in key or not ctx.ds:
        return ""
    name = _field_name(ctx, key)
    for spelling, (field, _) in fields(ctx.ds["models"]["zero_optimization"]).items():
        if field == name and spelling != key and hf_fills.filled(join(section, spelling), ctx.trainer):
            return spelling
    return ""


# --- 5. top-level scalars, optimizer and scheduler ---------------------------------------------

def _check_top_types(ctx):
    for key, kind in TOP_TYPES.items():
        if key not in ctx.cfg or ctx.cfg[key] is None or ctx.cfg[key] == "auto":
            continue
        if ctx.accelerate and key in hf_fills.OVERWRITTEN:
            continue  # Accelerate replaces the value, whatever it is
        value = ctx.cfg[key]
        if isinstance(kind, tuple):
            if value not in kind:
                ctx.error(key, f"{_short(value)} is not one DeepSpeed accepts",
                          f"write one of {', '.join(json.dumps(k) for k in kind)}")
        elif kind == "bool":
            _expect_bool(ctx, key, value)
        elif _expect_number(ctx, key, value):
            if kind == "count" and (_whole(value) is None or value < 1):
                why = " (DeepSpeed computes step % steps_per_print: ZeroDivisionError)" if value == 0 else ""
                ctx.error(key, f"must be a whole number >= 1, not {_short(value)}{why}",
                          'write a positive whole number, e.g. 100, or null to never print')
            elif key == "gradient_clipping" and value < 0:
                ctx.error(key, f"negative ({_short(value)}): DeepSpeed clips only when the value is > 0, so this "
                          "silently turns clipping off", "write 0 to turn clipping off, or a max norm such as 1.0")


def _expect_bool(ctx, path, value) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, str):
        ctx.error(path, f'a boolean written as the string "{value[:40]}": DeepSpeed uses the string as it is, '
                  'which is true in every truth test ("false" too) or fails with a TypeError',
                  "write true or false without quotes")
    else:
        ctx.error(path, f"{_short(value)} where DeepSpeed expects true or false",
                  "write true or false")
    return False


def _expect_number(ctx, path, value) -> bool:
    if _is_number(value):
        return True
    number = _numeric_text(value)
    if number is not None:
        ctx.error(path, f'a number written as the string "{value}": the code that uses it (DeepSpeed, the '
                  "torch optimizer) does arithmetic with it and fails with a TypeError",
                  f"write {_literal(number)} without quotes")
    elif isinstance(value, bool):
        ctx.error(path, f"{json.dumps(value)} is a boolean where DeepSpeed expects a number (this is not an on/off "
                  "switch)", "write a number, or delete the key to get DeepSpeed's default")
    else:
        ctx.error(path, f"{_short(value)} where DeepSpeed expects a number", "write a number")
    return False


def _check_optimizer(ctx):
    opt = ctx.cfg.get("optimizer")
    if not isinstance(opt, dict):
        return
    name = _section_type(ctx, "optimizer", ["type", "params", "legacy_fusion"], "AdamW",
                         "ignores the whole optimizer section (params included) and builds no optimizer",
                         'add "type": "AdamW"')
    params = opt.get("params")
    removed = REMOVED_OPTIMIZERS.get(name.lower()) if isinstance(name, str) else None
    if removed:
        version, replacement = removed
        onebit = sorted(ONEBIT_PARAMS & set(params)) if isinstance(params, dict) else []
        extra = f" and delete its 1-bit parameters ({', '.join(onebit)})" if onebit else ""
        ctx.error("optimizer.type", f'"{name}" (1-bit communication) was removed in DeepSpeed {version} (this file '
                  "was written for an older DeepSpeed): deepspeed.initialize fails",
                  f'write "type": "{replacement}", the same optimizer without compressed communication{extra}')
    elif name is not None and ctx.ds and name.lower() not in ctx.ds["optimizers"] \
            and name not in ctx.ds["torch_optimizers"]:
        names = ["Adam", "AdamW", "Adagrad", "Lamb", "Lion", "MuAdam", "MuAdamW", "MuSGD", "Muon",
                 *sorted(ctx.ds["torch_optimizers"])]
        ctx.error("optimizer.type", f'"{name}" is neither a DeepSpeed optimizer ({", ".join(names[:9])}, any '
                  "case) nor a torch.optim class: deepspeed.initialize fails",
                  f'write "{_suggest(name, names) or "AdamW"}"')
    _check_params(ctx, "optimizer", OPT_NUMBERS, OPT_BOOLS)
    if isinstance(params, dict) and "max_grad_norm" in params:
        ctx.error("optimizer.params.max_grad_norm", "DeepSpeed refuses it with a ValueError (clipping is "
                  "DeepSpeed's job)", f'delete it and write "gradient_clipping": '
                  f"{_short(params['max_grad_norm'])} at the top level")
    betas = params.get("betas") if isinstance(params, dict) else None
    if betas is not None and betas != "auto":
        if not (isinstance(betas, list) and len(betas) == 2):
            ctx.error("optimizer.params.betas", f"must be a list of two numbers, not {_short(betas)}",
                      "write [0.9, 0.999]")
        else:
            for i, beta in enumerate(betas):
                if beta != "auto":
                    _expect_number(ctx, f"optimizer.params.betas[{i}]", beta)


def _section_type(ctx, section, allowed, example, ignored, fix_missing):
    """The unknown keys of an optimizer/scheduler section and its "type": the type if it is a string."""
    body = ctx.cfg[section]
    for key in body:
        if _is_comment(key):
            _comment_note(ctx, join(section, key), 'DeepSpeed reads only "type" and "params" here and')
        elif key not in allowed:
            _unknown(ctx, join(section, key), key, allowed,
                     'DeepSpeed reads only "type" and "params" here and ignores the rest')
    name = body.get("type")
    if "type" not in body:
        ctx.error(f"{section}.type", f'missing: without "type" DeepSpeed {ignored}', fix_missing)
    elif not isinstance(name, str):
        ctx.error(f"{section}.type", f"must be a string, not {type_name(name)}", f'write "type": "{example}"')
    else:
        return name
    return None


def _check_params(ctx, section, numbers, bools):
    params = ctx.cfg[section].get("params")
    if params is None:
        return
    if not isinstance(params, dict):
        ctx.error(f"{section}.params", f"must be an object, not {type_name(params)}",
                  'write "params": {...}')
        return
    for key, value in params.items():
        p = f"{section}.params.{key}"
        if _is_comment(key):  # every key of params becomes a keyword argument
            ctx.error(p, f"a comment key, but not here: DeepSpeed passes every key of params to the {section} as a "
                      "keyword argument, and this one raises TypeError (unexpected keyword argument)",
                      'move the comment to the top level, e.g. "_comment": "..."')
        elif value == "auto":
            continue
        elif key in numbers:
            _expect_number(ctx, p, value)
        elif key in bools:
            _expect_bool(ctx, p, value)


def _check_scheduler(ctx):
    sched = ctx.cfg.get("scheduler")
    if not isinstance(sched, dict):
        return
    name = _section_type(ctx, "scheduler", ["type", "params"], "WarmupLR",
                         "ignores the scheduler section and the learning rate stays constant",
                         'add "type": "WarmupLR" (or delete the section)')
    if name is not None and ctx.ds and name not in ctx.ds["schedulers"] and name not in ctx.ds["torch_schedulers"]:
        names = [*ctx.ds["schedulers"], *sorted(ctx.ds["torch_schedulers"])]
        ctx.error("scheduler.type", f'"{name}" is neither a DeepSpeed scheduler ({", ".join(ctx.ds["schedulers"])}) '
                  "nor a torch.optim.lr_scheduler class (names are case-sensitive): deepspeed.initialize fails",
                  f'write "{_suggest(name, names) or "WarmupLR"}"')
    _check_params(ctx, "scheduler", SCHED_NUMBERS, ())
    _check_scheduler_signature(ctx, name)


def _check_scheduler_signature(ctx, name):
    """Required arguments of DeepSpeed's scheduler classes; warmup_num_steps must be a JSON integer."""
    import inspect

    cls = ctx.ds["scheduler_classes"].get(name) if ctx.ds and isinstance(name, str) else None
    params = ctx.cfg["scheduler"].get("params")
    params = params if isinstance(params, dict) else {}
    if cls is None:
        return
    for arg in list(inspect.signature(cls.__init__).parameters.values())[2:]:  # self, optimizer
        path = f"scheduler.params.{arg.name}"
        if arg.default is inspect.Parameter.empty and arg.name not in params:
            auto = ' (or "auto" for the HF Trainer)' if ctx.accelerate and hf_fills.filled(path, ctx.trainer) else ""
            ctx.error(path, f"missing: {name} requires it (TypeError at deepspeed.initialize)",
                      f'add "{arg.name}" with a number{auto}')
    steps = params.get("warmup_num_steps")
    if name in ("WarmupLR", "WarmupDecayLR", "WarmupCosineLR") and steps is not None and steps != "auto" \
            and _is_number(steps) and not (isinstance(steps, int) and steps > 0):
        ctx.error("scheduler.params.warmup_num_steps", f"{_short(steps)}: {name} raises ValueError unless it "
                  "is a positive JSON integer (1e3 or 1000.0 is a float to json.load)",
                  f"write {max(1, _whole(steps) or 1)}")


# --- 6. batch arithmetic ----------------------------------------------------------------------

def _check_batch(ctx):
    cfg, values, filled_later = ctx.cfg, {}, False
    for key in BATCH_KEYS:
        if key not in cfg:
            continue
        value = cfg[key]
        if value is None:
            continue  # null is DeepSpeed's own "not given"
        if value == "auto":
            filled_later = True
        elif _whole(value) is None or value < 1:
            if _is_number(value):
                ctx.error(key, f"must be a whole number >= 1, not {_short(value)}",
                          "write a positive whole number")
            else:
                _expect_number(ctx, key, value)  # a quoted number, a boolean, ...
            return
        else:
            if isinstance(value, float):
                ctx.warn(key, f"{value} is a float: DeepSpeed does not convert it to an int",
                         f"write {_whole(value)}")
            values[key] = _whole(value)
    train, micro, accum = (values.get(k) for k in BATCH_KEYS)
    if filled_later:
        return  # the HF Trainer or DeepSpeed's autotuner fills the rest; the "auto" check judged them
    if train is None and micro is None:
        ctx.error("train_micro_batch_size_per_gpu", "neither train_batch_size nor train_micro_batch_size_per_gpu "
                  "is set: DeepSpeed stops with 'Either train_batch_size or train_micro_batch_size_per_gpu "
                  "needs to be provided'", '"train_micro_batch_size_per_gpu": 1' +
                  (' (or "auto" for the HF Trainer / Accelerate)' if ctx.accelerate else ""))
        return
    if ctx.world_size is None:
        ranks, how = None, ""
    else:
        ranks, how = data_parallel_ranks(cfg, ctx.world_size)
        if ranks is None:
            ctx.error("sequence_parallel_size", f"{how} does not divide {ctx.world_size} GPU(s) into whole "
                      "data-parallel ranks: DeepSpeed's batch assertion (or its device mesh) fails",
                      "make the GPU count a multiple of sequence_parallel_size (× data_parallel_size = GPUs)")
            return
    _check_batch_numbers(ctx, train, micro, accum, ranks, how)


def _check_batch_numbers(ctx, train, micro, accum, ranks, how):
    """train = micro × accumulation × data-parallel ranks (DeepSpeedConfig._batch_assertion, runtime/config.py L590)."""
    dp = f"data-parallel ranks {ranks} ({how})" if ranks is not None and how != f"{ranks} GPU(s)" else \
        f"world size {ranks}"
    if None not in (train, micro, accum):
        per_gpu = micro * accum
        if ranks is not None and train != per_gpu * ranks:
            ctx.error("train_batch_size", f"{train} != micro batch {micro} × accumulation {accum} × {dp} = "
                      f"{per_gpu * ranks}: DeepSpeed's batch assertion fails",
                      f'write "train_batch_size": {per_gpu * ranks}')
        elif ranks is None and train % per_gpu:
            ctx.error("train_batch_size", f"{train} is not a multiple of micro batch {micro} × accumulation "
                      f"{accum} = {per_gpu}: no number of GPUs satisfies DeepSpeed's batch assertion",
                      f"write a multiple of {per_gpu}, e.g. {per_gpu * max(1, train // per_gpu)}")
    elif train is not None and (micro or accum):
        given, name = (micro, "train_micro_batch_size_per_gpu") if micro else (accum, "gradient_accumulation_steps")
        divisor = given * (ranks or 1)
        if train % divisor:
            across = f" × {dp}" if ranks else ""
            ctx.error("train_batch_size", f"{train} is not a multiple of {name} {given}{across}: DeepSpeed "
                      "derives the missing number by integer division and its batch assertion fails",
                      f"write a multiple of {divisor}")
    elif train is not None and ranks is not None and train % ranks:
        ctx.error("train_batch_size", f"{train} is not a multiple of the {dp}: DeepSpeed's batch "
                  "assertion fails", f"write a multiple of {ranks}")


# --- 7. precision ----------------------------------------------------------------------------

def _check_precision(ctx):
    fp16 = ctx.cfg.get("fp16")
    bf16 = ctx.cfg.get("bf16", ctx.cfg.get("bfloat16"))
    fp16_on = isinstance(fp16, dict) and fp16.get("enabled") is True
    bf16_on = isinstance(bf16, dict) and bf16.get("enabled") is True
    if fp16_on and bf16_on:
        ctx.error("bf16.enabled" if "bf16" in ctx.cfg else "bfloat16.enabled",
                  "fp16 and bf16 are both enabled: DeepSpeed stops with AssertionError 'bfloat16 and fp16 "
                  "modes cannot be simultaneously enabled'",
                  'keep one: bf16 on Ampere or newer GPUs, fp16 on older ones ("enabled": false on the other)')
    if not fp16_on:
        return
    scale = fp16.get("loss_scale", 0)
    if _is_number(scale) and scale > 0:
        ctx.warn("fp16.loss_scale", f"{_short(scale)} is a static loss scale: DeepSpeed multiplies every loss by it "
                 "and never adapts it (0 means dynamic scaling, which backs off on overflow)",
                 'write "loss_scale": 0 unless you chose this scale on purpose')
    power = fp16.get("initial_scale_power")
    if _whole(power) is not None and scale == 0 and power > 24:
        ctx.warn("fp16.initial_scale_power", f"starts the dynamic loss scale at 2^{power}: fp16 gradients "
                 f"overflow far below that, so roughly the first {power - 16} steps are skipped while the scale "
                 "halves", "write 16 (DeepSpeed's default)")


# --- 8. offload ------------------------------------------------------------------------------

def _check_offload(ctx):
    zero = ctx.cfg.get("zero_optimization")
    if not isinstance(zero, dict):
        return
    for key in ("offload_optimizer", "offload_param"):
        section = zero.get(key)
        if isinstance(section, dict) and section.get("device") == "nvme" and not section.get("nvme_path"):
            ctx.error(f"zero_optimization.{key}.nvme_path", 'missing: "device": "nvme" swaps to files in this '
                      "directory, and DeepSpeed has no default for it", '"nvme_path": "/local_nvme" (a directory '
                      "on a fast local NVMe drive)")


_CHECKS = (_check_top_keys, _check_sections_are_objects, _check_plain_sections, _check_model_sections,
           _check_stage, _check_offload, _check_top_types, _check_optimizer, _check_scheduler, _check_batch,
           _check_precision, _check_auto)
