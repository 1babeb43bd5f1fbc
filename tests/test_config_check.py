"""The DeepSpeed config checker: a corpus of good and bad configs, the builder, fuzzing, the CLI,
and what DeepSpeed 0.19.8's own parser says about the same mistakes."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dscourse import package_path
from dscourse.config import build_config
from dscourse.config.check import (
    BATCH_KEYS,
    TARGETS,
    ConfigReadError,
    Problem,
    check_config,
    deepspeed_verdict,
    implied_world_size,
    read_config,
    to_strict_json,
    zero_default_stage,
)
from dscourse.config.cli import main
from dscourse.config.deepspeed_reads import TOP_LEVEL_KEYS
from dscourse.config.hf_fills import TRAINER_FILLS
from dscourse.config.problem import SEVERITIES

CONFIGS = package_path("configs", "corpus")
EXPECTED = json.loads((CONFIGS / "expected.json").read_text())
REPO = Path(__file__).parents[1]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load(name: str) -> dict:
    return read_config((CONFIGS / name).read_text())[0]


def _paths(problems, severity):
    return sorted(p.path for p in problems if p.severity == severity)


# --- the corpus ---------------------------------------------------------------------------------

def test_corpus_is_complete():
    files = {p.name for p in CONFIGS.iterdir()} - {"expected.json"}
    assert files == set(EXPECTED)
    good = [f for f in files if f.startswith(("ds_", "hf_"))]
    bad = [f for f in files if f.startswith(("bad_", "unreadable_"))]
    assert len(files) >= 25 and len(good) >= 8 and len(bad) >= 20
    # notebook 02 shows the mistakes a table per part of the config: each one belongs to a part, none over 12 rows
    groups = [EXPECTED[f].get("group") for f in files if f.startswith("bad_")]
    assert None not in groups and max(groups.count(g) for g in set(groups)) <= 12


READABLE = [(name, target) for name, entry in EXPECTED.items() if not entry.get("unreadable")
            for target in ("deepspeed", "hf")]


@pytest.mark.parametrize("name,target", READABLE)
def test_corpus_problems(name, target):
    entry = EXPECTED[name]
    text = (CONFIGS / name).read_text()
    problems = check_config(text, target, entry.get("world_size"))
    cfg = read_config(text)[0]
    assert _paths(problems, "error") == sorted(entry[target]["errors"]), [str(p) for p in problems]
    assert _paths(problems, "warning") == sorted(entry[target]["warnings"]), [str(p) for p in problems]
    for p in problems:
        line = str(p)
        assert "\n" not in line and " — " in line and p.fix and p.message
        if p.path:
            assert f"{p.path}: " in line  # the message names the key path
        if not p.path or p.path.split(".")[0] in cfg:  # present in the file: the problem points at a line
            assert p.line is not None and f"line {p.line}: " in line, line


@pytest.mark.parametrize("name", [n for n, e in EXPECTED.items() if e.get("unreadable")])
def test_corpus_unreadable(name):
    with pytest.raises(ConfigReadError) as err:
        read_config((CONFIGS / name).read_text())
    assert "\n" not in str(err.value)


def test_good_files_are_clean_for_their_target():
    for name, entry in EXPECTED.items():
        if name.startswith("ds_"):
            assert entry["deepspeed"] == {"errors": [], "warnings": []}, name
        if name.startswith(("ds_", "hf_")):
            assert entry["hf"] == {"errors": [], "warnings": []}, name


def test_chapter_configs():
    """For HF exactly the // comments are errors; for plain DeepSpeed they are warnings and "auto" is an error."""
    for name, comment_lines in (("chapter_zero2.json", [17]), ("chapter_zero3_offload.json", [5, 9])):
        text = (CONFIGS / name).read_text()
        hf = check_config(text, "hf")
        assert [(p.line, p.severity) for p in hf] == [(n, "error") for n in comment_lines]
        assert all("comment" in p.message and "json.load" in p.message for p in hf)
        plain = check_config(text, "deepspeed")
        assert sorted(p.line for p in plain if p.severity == "warning") == comment_lines
        errors = [p for p in plain if p.severity == "error"]
        assert errors and all('"auto"' in p.message for p in errors)
        assert {"train_batch_size", "gradient_accumulation_steps"} <= {p.path for p in errors}


def test_messages_say_why_and_what_to_write():
    [p] = check_config(_load("bad_zero_optimisation.json"))
    assert "ZeRO stays OFF" in p.message and '"zero_optimization"' in p.fix
    [p] = check_config(_load("bad_stage3_max_live_params.json"))
    assert '"stage3_max_live_parameters"' in p.fix
    [p] = check_config(_load("bad_cpu_offload_deprecated.json"))
    assert p.severity == "warning" and '"offload_optimizer": {"device": "cpu"}' in p.fix
    [p] = check_config(_load("bad_optimizer_type.json"))
    assert '"AdamW"' in p.fix
    [p] = check_config(_load("bad_scheduler_typo.json"))
    assert '"WarmupDecayLR"' in p.fix
    string_fixes = {p.path: p.fix for p in check_config(_load("bad_string_numbers.json"))}
    assert "200000000 without quotes" in string_fixes["zero_optimization.reduce_bucket_size"]
    assert "0.0001 without quotes" in string_fixes["optimizer.params.lr"]
    [p] = check_config(_load("bad_batch_mismatch.json"), world_size=2)
    assert '"train_batch_size": 16' in p.fix
    [p] = check_config(_load("bad_offload_param_stage2.json"))
    assert "ZeRO-3" in p.message and '"stage": 3' in p.fix
    [p] = check_config(_load("bad_missing_stage.json"))
    assert "stage 0" in p.message and p.path == "zero_optimization.stage"


def test_problem_str_is_one_line():
    p = Problem("a.b", "two\nlines", "fix  it", line=3, severity="warning")
    assert str(p) == "line 3: a.b: two lines — fix it"
    assert str(Problem("", "m", "f")) == "(file): m — f"


# --- good configs never rejected ------------------------------------------------------------------

BUILDER_VARIANTS = [dict(stage=s, offload_optimizer=oo, offload_param=op, precision=prec)
                    for s in range(4) for oo in ("none", "cpu") for op in ("none", "cpu")
                    for prec in ("bf16", "fp16", "fp32")
                    if not (op == "cpu" and s != 3) and not (oo == "cpu" and s == 0)]


@pytest.mark.parametrize("variant", BUILDER_VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_builder_configs_pass(variant):
    for micro, accum, world in ((1, 1, 1), (4, 2, 8)):
        cfg = build_config(**variant, micro_batch=micro, grad_accum=accum, world_size=world)
        for target in ("deepspeed", "hf"):
            assert check_config(cfg, target, world) == []
            assert check_config(cfg, target) == []
            assert check_config(json.dumps(cfg), target, world) == []
        assert implied_world_size(cfg) == world


def test_zero_default_stage_is_zero():
    assert zero_default_stage() == 0


def test_to_strict_json_keeps_keys_and_drops_comments():
    text = (CONFIGS / "chapter_zero2.json").read_text()
    strict = to_strict_json(text)
    cfg = json.loads(strict)
    assert list(cfg) == list(read_config(text)[0]) and cfg["zero_optimization"]["overlap_comm"] is True
    assert "//" not in strict and strict.startswith('{\n  "train_batch_size"')
    assert check_config(strict, "hf") == []


# --- fuzzing ----------------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8)
                    | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(["auto", "true", "2e8", "cpu"]),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)
ZERO_KEYS = ["stage", "offload_param", "offload_optimizer", "overlap_comm", "reduce_bucket_size",
             "stage3_prefetch_bucket_size", "stage3_max_live_parameters", "cpu_offload", "sub_group_size",
             "zenflow", "leaf_module", "compute_grad_norm"]
OFFLOAD = st.fixed_dictionaries({}, optional={"device": st.sampled_from(["cpu", "nvme", "none", "gpu", 3]),
                                              "nvme_path": JSON, "pin_memory": JSON, "ratio": JSON})
ZERO = st.dictionaries(st.sampled_from(ZERO_KEYS), JSON | OFFLOAD, max_size=6)
SECTION = st.fixed_dictionaries({}, optional={"enabled": JSON, "type": st.sampled_from(["AdamW", "adam", "WarmupLR", "X"]),
                                              "params": JSON, "loss_scale": JSON})
KNOWN_TOP = st.dictionaries(st.sampled_from(sorted(TOP_LEVEL_KEYS) + ["amp", "zero_optimisation"]),
                            JSON | ZERO | SECTION, max_size=8)


@FUZZ
@given(value=JSON | KNOWN_TOP | st.fixed_dictionaries({"zero_optimization": ZERO}),
       target=st.sampled_from(sorted(TARGETS)), world=st.none() | st.integers(1, 16))
def test_fuzz_values_never_raise(value, target, world):
    problems = check_config(value, target, world) if not isinstance(value, str) else []
    assert all(isinstance(p, Problem) and p.severity in SEVERITIES for p in problems)
    assert not any("internal checker error" in p.message for p in problems), [str(p) for p in problems]
    for p in problems:
        assert "\n" not in str(p)


@FUZZ
@given(text=st.text(max_size=60) | JSON.map(json.dumps) | KNOWN_TOP.map(lambda d: json.dumps(d, indent=1) + "\n//x"),
       target=st.sampled_from(["deepspeed", "hf"]))
def test_fuzz_text_raises_only_config_read_error(text, target):
    try:
        problems = check_config(text, target)
    except ConfigReadError as e:
        assert "\n" not in str(e)
        return
    assert not any("internal checker error" in p.message for p in problems)


GOOD_BASES = [build_config(2), build_config(3, offload_optimizer="cpu", offload_param="cpu"), build_config(0),
              build_config(1, precision="fp16")]
POSITIVE = st.integers(1, 10**9)
VALID_ZERO = {"overlap_comm": st.booleans(), "contiguous_gradients": st.booleans(), "reduce_scatter": st.booleans(),
              "reduce_bucket_size": POSITIVE, "allgather_bucket_size": POSITIVE,
              "allgather_partitions": st.booleans(), "load_from_fp32_weights": st.booleans()}
VALID_ZERO3 = {"stage3_max_live_parameters": POSITIVE, "stage3_max_reuse_distance": POSITIVE,
               "stage3_prefetch_bucket_size": POSITIVE, "stage3_param_persistence_threshold": POSITIVE,
               "stage3_gather_16bit_weights_on_model_save": st.booleans(), "sub_group_size": POSITIVE}
VALID_TOP = {"steps_per_print": POSITIVE | st.none(), "wall_clock_breakdown": st.booleans(),
             "gradient_clipping": st.floats(0, 10), "prescale_gradients": st.booleans(),
             "memory_breakdown": st.booleans(), "zero_allow_untested_optimizer": st.booleans(),
             "communication_data_type": st.sampled_from(["fp16", "bf16", "fp32"])}
OPTIONAL_TOP = ["gradient_clipping", "steps_per_print", "wall_clock_breakdown", "optimizer", "bf16", "fp16",
                "gradient_accumulation_steps", "train_batch_size"]


@st.composite
def mutated_good_config(draw):
    cfg = copy.deepcopy(draw(st.sampled_from(GOOD_BASES)))
    zero = cfg["zero_optimization"]
    allowed = {**VALID_ZERO, **VALID_ZERO3} if zero["stage"] == 3 else VALID_ZERO if zero["stage"] else {}
    for key in draw(st.lists(st.sampled_from(sorted(allowed) or ["stage"]), max_size=4)):
        if key in allowed:
            zero[key] = draw(allowed[key])
    for key in draw(st.lists(st.sampled_from(sorted(VALID_TOP)), max_size=4)):
        cfg[key] = draw(VALID_TOP[key])
    for key in draw(st.lists(st.sampled_from(OPTIONAL_TOP), max_size=3)):
        cfg.pop(key, None)
    if draw(st.booleans()):
        cfg["scheduler"] = {"type": "WarmupLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": 1e-3,
                                                           "warmup_num_steps": draw(st.integers(1, 1000))}}
    return cfg


@settings(max_examples=60, deadline=None)
@given(cfg=mutated_good_config())
def test_mutated_good_configs_stay_good(cfg):
    """Adding/removing known keys with valid values: no errors, and DeepSpeed's own parser agrees."""
    problems = check_config(cfg)
    assert not [p for p in problems if p.severity == "error"], [str(p) for p in problems]
    assert deepspeed_verdict(cfg).startswith("accepted"), deepspeed_verdict(cfg)


@settings(max_examples=60, deadline=None)
@given(base=st.sampled_from(GOOD_BASES), section=st.sampled_from(["", "zero_optimization"]),
       junk=st.text("abcdefghijklmnopqrstuvwxyz_", min_size=3, max_size=12))
def test_unknown_keys_are_always_named(base, section, junk):
    cfg = copy.deepcopy(base)
    target = cfg[section] if section else cfg
    key = "x_" + junk
    target[key] = 1
    path = f"{section}.{key}" if section else key
    assert path in {p.path for p in check_config(cfg) if p.severity == "error"}


# --- "auto" ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(TRAINER_FILLS))
def test_auto_in_trainer_keys(path):
    cfg = build_config(3)
    cfg.setdefault("scheduler", {"type": "WarmupDecayLR", "params": {"total_num_steps": 10}})
    node = cfg
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = "auto"
    assert not [p for p in check_config(cfg, "hf") if p.severity == "error"]
    assert path in {p.path for p in check_config(cfg, "deepspeed") if p.severity == "error"}


def test_zero3_auto_keys_filled_at_any_stage_but_read_only_by_zero3():
    """The Trainer fills the pair only under ZeRO-3, Accelerate at any stage; below stage 3 they do nothing."""
    zero3 = {"train_micro_batch_size_per_gpu": "auto",
             "zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": "auto",
                                   "stage3_param_persistence_threshold": "auto"}}
    assert check_config(zero3, "hf") == [] and check_config(zero3, "accelerate") == []
    zero2 = copy.deepcopy(zero3)
    zero2["zero_optimization"]["stage"] = 2
    for target in ("hf", "accelerate"):
        problems = check_config(zero2, target)
        assert {p.severity for p in problems} == {"warning"} and len(problems) == 2
        assert all("only ZeRO-3 reads it: at stage 2 it does nothing" in p.message for p in problems)


# --- the CLI -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cli_exit_codes_over_corpus(name, capsys):
    entry = EXPECTED[name]
    args = ["check", str(CONFIGS / name), "--for", "hf"]
    if entry.get("world_size"):
        args += ["--world-size", str(entry["world_size"])]
    code = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if entry.get("unreadable"):
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        return
    expected = entry["hf"]
    lines = out.strip().splitlines()
    assert code == (1 if expected["errors"] else 0) and err == ""
    assert len(lines) == len(expected["errors"]) + len(expected["warnings"]) + 1  # + the summary line
    assert all(line.startswith(("error: ", "warning: ")) for line in lines[:-1])
    assert ("fine for" in lines[-1]) == (code == 0)


def _run(*args, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "dscourse.config", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def test_cli_subprocess(tmp_path):
    good = _run("check", str(CONFIGS / "ds_zero2.json"))
    assert good.returncode == 0 and good.stdout.strip().splitlines() == [
        f"{CONFIGS / 'ds_zero2.json'}: fine for plain DeepSpeed (deepspeed.initialize) "
        "(the batch numbers imply a world size of 8)"]
    bad = _run("check", str(CONFIGS / "chapter_zero2.json"))
    assert bad.returncode == 1 and len(bad.stdout.strip().splitlines()) == 6
    assert not bad.stderr.strip()
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    for args in (["check", str(tmp_path / "missing.json")], ["check", str(binary)], ["check", str(tmp_path)],
                 ["check", str(CONFIGS / "ds_zero2.json"), "--world-size", "zero"], ["frobnicate"], [],
                 ["strict", str(CONFIGS / "unreadable_garbage.json")]):
        proc = _run(*args)
        assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, args
    strict = _run("strict", str(CONFIGS / "chapter_zero3_offload.json"))
    assert strict.returncode == 0 and json.loads(strict.stdout)["zero_optimization"]["stage"] == 3


def test_check_module_imports_no_torch():
    code = ("import sys, dscourse.config.check, dscourse.config.cli; "
            "print(sorted(m for m in ('torch', 'deepspeed', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.stdout.strip() == "[]"


# --- what DeepSpeed's own parser says --------------------------------------------------------------

class _Trace(dict):
    """A config dict that records every key DeepSpeedConfig asks for."""

    seen: set = set()

    def __contains__(self, key):
        _Trace.seen.add(key)
        return dict.__contains__(self, key)

    def get(self, key, *default):
        _Trace.seen.add(key)
        return dict.get(self, key, *default)

    def __getitem__(self, key):
        _Trace.seen.add(key)
        return dict.__getitem__(self, key)

    def keys(self):
        return self

    def __copy__(self):
        return self


def test_top_level_keys_cover_what_deepspeed_reads():
    from deepspeed.runtime.config import _REMOVED_TOP_LEVEL_CONFIG_KEYS, DeepSpeedConfig

    _Trace.seen = set()
    DeepSpeedConfig(_Trace({"train_batch_size": 1}))
    read = _Trace.seen - set(_REMOVED_TOP_LEVEL_CONFIG_KEYS)
    assert read and read <= TOP_LEVEL_KEYS, read - TOP_LEVEL_KEYS
    assert not TOP_LEVEL_KEYS & set(_REMOVED_TOP_LEVEL_CONFIG_KEYS)


VERDICTS = {  # corpus file -> what DeepSpeedConfig (world size 1) does with it
    "bad_zero_optimisation.json": "accepted silently (ZeRO stage 0",
    "bad_offload_param_stage2.json": "accepted silently (ZeRO stage 2",
    "chapter_zero2.json": "raises TypeError",  # "auto" in plain DeepSpeed
    "chapter_zero3_offload.json": "raises TypeError",
    "bad_fp16_and_bf16.json": "raises AssertionError: bfloat16 and fp16 modes cannot be simultaneously enabled",
    "bad_stage3_max_live_params.json": "raises ValidationError",
    "bad_missing_stage.json": "accepted silently (ZeRO stage 0",
    "bad_cpu_offload_deprecated.json": "accepted with a warning",
    "bad_steps_per_print_zero.json": "accepted silently",
    "bad_gradient_clipping_negative.json": "accepted silently",
    "bad_string_booleans.json": "raises TypeError: unsupported operand type(s) for |: 'str' and 'bool'",
    "bad_batch_indivisible.json": "raises AssertionError",
    "bad_removed_amp.json": "raises DeepSpeedConfigError",
}


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_deepspeed_own_verdict(name):
    verdict = deepspeed_verdict(_load(name))
    assert verdict.startswith(VERDICTS[name]), verdict
    assert any(p.severity == "error" for p in check_config(_load(name))) or "warning" in verdict


def test_deepspeed_file_loader_rejects_duplicate_keys():
    # DeepSpeedConfig(path) reads with object_pairs_hook=dict_raise_error_on_duplicate_keys; a dict (json.load's,
    # as the Trainer and Accelerate pass it) has already kept the last value
    path = CONFIGS / "bad_duplicate_key.json"
    assert deepspeed_verdict(path).startswith("raises ValueError: Duplicate keys in DeepSpeed config: ['stage']")
    assert deepspeed_verdict(json.loads(path.read_text())).startswith("accepted silently (ZeRO stage 3")


def test_deepspeed_accepts_every_good_plain_config():
    for name in EXPECTED:
        if name.startswith("ds_"):
            cfg = _load(name)
            assert deepspeed_verdict(cfg, implied_world_size(cfg) or 1).startswith("accepted silently"), name
    assert deepspeed_verdict(_load("ds_zero2.json"), world_size=4).startswith("raises AssertionError: Check batch")


def test_batch_helpers():
    assert implied_world_size({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4,
                               "gradient_accumulation_steps": 2}) == 4
    assert implied_world_size({"train_batch_size": "auto"}) is None
    assert BATCH_KEYS[0] == "train_batch_size"
