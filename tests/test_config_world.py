"""The config checker against configs from the world: Accelerate's own templates, AutoTP, sequence parallelism,
removed DeepSpeed features, comment keys and hostile files (``dscourse/configs/world``, each with its verdict
in ``expected.json``), and the DeepSpeed 0.19.8 facts behind the messages, read from DeepSpeed's own classes."""

from __future__ import annotations

import json
import re

import pytest

from dscourse import package_path
from dscourse.config.check import TARGETS, ConfigReadError, check_config, deepspeed_verdict, read_config
from dscourse.config.cli import SHOWN, main
from dscourse.config.removed import REJECTED_VALUES, REMOVED_OPTIMIZERS, REMOVED_TOP, REMOVED_ZERO

WORLD = package_path("configs", "world")
EXPECTED = json.loads((WORLD / "expected.json").read_text())
READABLE = [(name, target) for name, entry in EXPECTED.items() if not entry.get("unreadable") for target in TARGETS]
ACCELERATE_NINE = sorted(n for n in EXPECTED if n.startswith(("accelerate_template_", "accelerate_test_")))


def _text(name: str) -> str:
    return (WORLD / name).read_text(encoding="utf-8")


def test_world_corpus_is_complete():
    assert {p.name for p in WORLD.iterdir()} - {"expected.json"} == set(EXPECTED)
    assert all(entry["why"] and (entry["says"] or entry["never"] or entry.get("unreadable") is None)
               for entry in EXPECTED.values())
    assert len(ACCELERATE_NINE) == 9


@pytest.mark.parametrize("name,target", READABLE)
def test_world_verdicts(name, target):
    entry = EXPECTED[name]
    problems = check_config(_text(name), target, entry.get("world_size"))
    for key, severity in (("errors", "error"), ("warnings", "warning"), ("notes", "note")):
        assert sorted(p.path for p in problems if p.severity == severity) == entry[target][key], \
            [str(p) for p in problems]
    for p in problems:
        assert "\n" not in str(p) and " — " in str(p) and p.fix
        assert p.line is not None or p.path == "zero_optimization", str(p)  # every problem in the file has a line


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_world_cli(name, capsys):
    """Exit codes as expected; what each file must say (and must never say) appears in the CLI's output."""
    entry, output = EXPECTED[name], []
    for target in TARGETS:
        args = ["check", str(WORLD / name), "--for", target]
        if entry.get("world_size"):
            args += ["--world-size", str(entry["world_size"])]
        code = main(args)
        out, err = capsys.readouterr()
        output.append(out + err)
        assert "Traceback" not in out + err and "internal error" not in out + err
        if entry.get("unreadable"):
            assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        else:
            assert code == (1 if entry[target]["errors"] else 0), out
            assert err == ""
    text = " ".join(output)
    for phrase in entry["says"]:
        assert phrase in text, phrase
    for phrase in entry["never"]:
        assert phrase not in text, phrase


@pytest.mark.parametrize("name", ACCELERATE_NINE)
def test_accelerate_templates_pass_for_hf(name, capsys):
    assert main(["check", str(WORLD / name), "--for", "hf"]) == 0
    assert capsys.readouterr().out.strip().endswith("fine for the Hugging Face Trainer / Accelerate")


# --- the DeepSpeed 0.19.8 facts behind the messages ------------------------------------------------------

def test_removed_tables_name_what_deepspeed_rejects():
    from deepspeed.runtime import config as ds_config

    assert set(REMOVED_TOP) == set(ds_config._REMOVED_TOP_LEVEL_CONFIG_KEYS)
    assert set(REMOVED_ZERO) == set(ds_config._REMOVED_ZERO_CONFIG_KEYS)
    assert not set(REMOVED_OPTIMIZERS) & set(ds_config.DEEPSPEED_OPTIMIZERS)
    for replacement in {r for _, r in REMOVED_OPTIMIZERS.values()}:
        assert replacement.lower() in ds_config.DEEPSPEED_OPTIMIZERS
    cfg = read_config(_text("removed_sections.json"))[0]
    for key in REMOVED_TOP.keys() & cfg.keys():
        verdict = deepspeed_verdict({"train_batch_size": 8, key: cfg[key]})
        assert verdict.startswith("raises DeepSpeedConfigError"), (key, verdict)
    assert deepspeed_verdict(read_config(_text("removed_mics.json"))[0]).startswith("raises DeepSpeedConfigError")


def test_rejected_values_are_rejected_by_deepspeed():
    for path, value in REJECTED_VALUES:
        section, key = path.split(".")
        verdict = deepspeed_verdict({"train_batch_size": 8, section: {"stage": 2, key: value}})
        assert verdict.startswith("raises ValidationError"), verdict


def test_nested_auto_becomes_deepspeeds_default():
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    cfg = read_config(_text("nested_auto_offload.json"))[0]
    used = DeepSpeedZeroConfig(**cfg["zero_optimization"]).offload_param.buffer_size
    [problem] = check_config(cfg)
    assert f"uses its default, {used}" in problem.message


def test_sequence_parallel_batch_agrees_with_deepspeed():
    good = read_config(_text("sequence_parallel.json"))[0]
    bad = read_config(_text("sequence_parallel_wrong_batch.json"))[0]
    assert deepspeed_verdict(good, world_size=2).startswith("accepted")
    assert check_config(good, world_size=2) == []
    assert deepspeed_verdict(bad, world_size=2).startswith("raises AssertionError: Check batch related parameters")
    [problem] = check_config(bad, world_size=2)
    wanted = int(re.search(r'"train_batch_size": (\d+)', problem.fix).group(1))
    assert deepspeed_verdict({**bad, "train_batch_size": wanted}, world_size=2).startswith("accepted")
    odd = check_config(good, world_size=3)  # 3 GPUs cannot be split into sequence-parallel pairs
    assert [p.path for p in odd] == ["sequence_parallel_size"]
    assert not deepspeed_verdict(good, world_size=3).startswith("accepted")


def test_autotp_and_comment_configs_against_deepspeed():
    assert deepspeed_verdict(read_config(_text("autotp_zero2_gather.json"))[0]).startswith("accepted")
    assert deepspeed_verdict(read_config(_text("comment_keys.json"))[0]).startswith("accepted silently")
    inside = read_config(_text("comment_keys_inside.json"))[0]
    assert deepspeed_verdict(inside).startswith("raises ValidationError")


# --- hostile inputs --------------------------------------------------------------------------------------

def test_output_is_capped(tmp_path, capsys):
    junk = tmp_path / "junk.json"
    junk.write_text(json.dumps({"train_micro_batch_size_per_gpu": 1, **{f"k{i}": i for i in range(3000)}}))
    assert main(["check", str(junk)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == SHOWN + 2
    assert lines[SHOWN] == f"... and {3000 - SHOWN} more problem(s) not shown"
    assert lines[-1].endswith("3000 error(s), 0 warning(s) for plain DeepSpeed (deepspeed.initialize)")


def test_hostile_lines():
    with pytest.raises(ConfigReadError, match=r"^line 3: an integer of 5000 digits"):
        read_config(_text("integer_5000_digits.json"))
    lines = {p.path: p.line for p in check_config(_text("nan_infinity.json"))}
    assert lines == {"gradient_clipping": 3, "zero_optimization.reduce_bucket_size": 6}
    [dup] = check_config(_text("duplicate_same_line.json"))
    assert dup.line == 1 and "columns 61 and 95" in dup.message
