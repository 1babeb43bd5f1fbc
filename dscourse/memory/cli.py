"""``python -m dscourse.memory``: model-state memory per GPU and host RAM per node, every formula side by side,
and with a model shape and a sequence length the peak of a training step, phase by phase and term by term.

    python -m dscourse.memory --model-config path/to/config.json --gpus 8 --stage 3 --micro-batch 1 --seq 4096 --json

Bad input exits 2 with one line that says what is wrong, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli_util import OneLineParser, UsageError, positive_int
from ..tables import text_table
from .formulas import FORMULAS, STATE_CATEGORIES, FormulaError, Setup, estimate, estimate_all
from .hf import arch_from_file, hf_presets
from .lora import TARGET_SETS
from .peak import PHASES, TERM_LABELS, Lora, Peak, arch_setup, peak
from .planner import DEFAULT_HEADROOM, Shortfall, plan
from .shapes import PRESETS, Arch
from .sizes import format_bytes, parse_bytes, parse_count

PROG = "python -m dscourse.memory"
# The model's field names (in FormulaError messages) as this command line spells them
FLAGS = {"stage": "--stage", "gpus": "--gpus", "gpus_per_node": "--gpus-per-node", "largest_layer": "--largest-layer",
         "offload_optimizer": "--offload-optimizer", "offload_param": "--offload-param", "formula": "--formula",
         "seq": "--seq", "micro_batch": "--micro-batch", "grad_accum": "--grad-accum"}


def _say(e: Exception) -> str:
    return e.worded(FLAGS) if isinstance(e, FormulaError) else str(e)




def _argtype(parse):
    """An argparse type from a parser that raises ValueError with a readable message."""
    def convert(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert


_count, _bytes = _argtype(parse_count), _argtype(parse_bytes)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="Per-GPU model-state memory and host RAM per node for ZeRO stages 0-3.",
                epilog="Sizes accept 7.5e9, 7.5B, 13B, 70b, 350M. GB here are 10^9 bytes, as in the ZeRO paper.")
    p.add_argument("--params", type=_count, help="parameter count, e.g. 7.5B (or give --preset)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a published model shape: sets --params, "
                   "--largest-layer and the activation shape")
    p.add_argument("--model-config", metavar="PATH", help="a Hugging Face config.json (read locally), or the name of "
                   f"one the course ships: {', '.join(hf_presets())}")
    p.add_argument("--gpus", type=int, default=1, help="total number of GPUs (data-parallel ranks)")
    p.add_argument("--stage", type=int, default=0, help="ZeRO stage 0-3")
    p.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per node (default: all on one node)")
    p.add_argument("--offload-optimizer", default="none", help="none or cpu")
    p.add_argument("--offload-param", default="none", help="none or cpu (stage 3 only)")
    p.add_argument("--largest-layer", type=_count, default=None,
                   help="parameters of the largest layer (DeepSpeed's ZeRO-3 estimator needs it)")
    p.add_argument("--formula", default=None, help=f"one of {', '.join(FORMULAS)} (default: all side by side)")
    p.add_argument("--seq", type=positive_int, help="sequence length: adds the step's peak (needs --preset or "
                   "--model-config)")
    p.add_argument("--micro-batch", type=positive_int, default=1, help="micro-batch per GPU, for the peak")
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing (transformers' "
                   "gradient_checkpointing_enable, non-reentrant)")
    p.add_argument("--grad-accum", type=positive_int, default=1, help="gradient accumulation steps, for the peak "
                   "(what the micro-steps before the boundary keep)")
    p.add_argument("--lora-rank", type=int, default=0, help="LoRA fine-tuning with adapters of this rank (PEFT), the "
                   "rest frozen; 0 (default): every parameter trains. Needs --preset or --model-config")
    p.add_argument("--lora-targets", default="q_proj,v_proj", help=f"the layers LoRA adapts: {' or '.join(TARGET_SETS)}")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _lora(args) -> Lora | None:
    if args.lora_rank < 0:
        raise FormulaError(f"--lora-rank must be 0 (full fine-tuning) or more, not {args.lora_rank}")
    return Lora(args.lora_rank, args.lora_targets) if args.lora_rank else None


def _model_config(text: str) -> Arch:
    path = Path(text)
    if not path.exists() and text in hf_presets():
        path = hf_presets()[text]
    elif not path.exists():
        raise FormulaError(f"no such file: {text} (or name a shipped config: {', '.join(hf_presets())})")
    if path.is_dir():
        path = path / "config.json"
    return arch_from_file(path)


def _setup(args) -> tuple[Setup, Arch | None]:
    if args.preset and args.model_config:
        raise FormulaError("give --preset or --model-config, not both")
    arch = PRESETS[args.preset] if args.preset else (_model_config(args.model_config) if args.model_config else None)
    if args.params is None and arch is None:
        raise FormulaError("give the model size with --params (e.g. --params 7B), --preset or --model-config")
    if args.params is not None and arch is not None and args.seq is not None and args.params != arch.params:
        raise FormulaError(f"--params {args.params:,} contradicts the model shape ({arch.params:,} parameters): "
                           "leave --params out")
    params = args.params if args.params is not None else arch.params
    largest = args.largest_layer if args.largest_layer is not None else (arch.largest_layer if arch else None)
    if args.gpus < 1:
        raise FormulaError(f"--gpus must be at least 1, not {args.gpus}")
    if args.gpus_per_node is not None and args.gpus_per_node < 1:
        raise FormulaError(f"--gpus-per-node must be at least 1, not {args.gpus_per_node}")
    if args.formula is not None and args.formula not in FORMULAS:
        raise FormulaError(f"unknown formula {args.formula!r}: use one of {', '.join(FORMULAS)}")
    if args.seq is not None and arch is None:
        raise FormulaError("the step's peak needs the model's shape: add --model-config (or --preset)")
    lora = _lora(args)
    if lora and (arch is None or args.params is not None or args.largest_layer is not None):
        raise FormulaError("LoRA's adapters are sized from the model's layers: give --model-config (or --preset) "
                           "and leave --params and --largest-layer out")
    if arch is not None and args.params is None and args.largest_layer is None:
        return arch_setup(arch, args.gpus, args.stage, args.gpus_per_node, args.offload_optimizer,
                          args.offload_param, lora=lora), arch
    setup = Setup(params=params, gpus=args.gpus, stage=args.stage, gpus_per_node=args.gpus_per_node,
                  offload_optimizer=args.offload_optimizer, offload_param=args.offload_param, largest_layer=largest)
    return setup, arch


def run(argv=None) -> dict | str:
    """Parse ``argv`` and return the JSON object (``--json``) or the text table."""
    args = build_parser().parse_args(argv)
    setup, arch = _setup(args)
    lora = _lora(args)
    step = peak(setup, arch, args.micro_batch, args.seq, args.checkpointing, grad_accum=args.grad_accum, lora=lora) \
        if args.seq else None
    if args.json:
        name = args.formula or "allocated"
        result = estimate(setup, name).as_dict()
        if step is not None:
            result.update({k: v for k, v in step.as_dict().items() if k not in ("gpu_bytes", "cpu_bytes")})
            if name == "allocated":  # with the host's share of gradient accumulation
                result["cpu_bytes"] = step.cpu_bytes
            result["activation_bytes"] = step.phases["forward"]["activations"]
        if args.formula is None:
            result["all"] = {k: (v.as_dict() if not isinstance(v, FormulaError) else {"error": _say(v)})
                             for k, v in estimate_all(setup).items()}
        return result
    results = {args.formula: estimate(setup, args.formula)} if args.formula else estimate_all(setup)
    return table(setup, results) + ("\n\n" + peak_table(step) if step is not None else "")


def table(setup: Setup, results: dict) -> str:
    """Every family's estimate side by side; the families with no answer say why below the table."""
    head = (f"{setup.params / 1e9:.3g}B parameters, {setup.gpus} GPU(s) on {setup.nodes} node(s), "
            f"ZeRO-{setup.stage}, offload optimizer={setup.offload_optimizer}, param={setup.offload_param}"
            + (f", LoRA: {setup.trainable:,} trainable ({100 * setup.trainable / setup.params:.3g}%)"
               if setup.lora else ""))
    cols = ["formula", "GPU/rank", "host/node", *STATE_CATEGORIES]
    rows, silent = [], []
    for name, est in results.items():
        if isinstance(est, FormulaError):
            silent.append(f"{name}: no answer: {_say(est)}")
            continue
        rows.append([name, format_bytes(est.gpu_bytes), format_bytes(est.cpu_bytes),
                     *[format_bytes(est.gpu[c]) if c in est.gpu else "" for c in STATE_CATEGORIES]])
    lines = [head, "", "Between optimizer steps:", text_table(cols, rows)] + ([""] + silent if silent else [])
    lines += ["", "Breakdown columns are per GPU; GB = 10^9 bytes."]
    return "\n".join(lines)


def peak_table(step: Peak) -> str:
    """The step's phases, and the terms at its peak (``allocated`` family, bf16, the loop keeps only the loss)."""
    at = step.peak_phase
    head = (f"Peak during a training step: {step.arch.name}, micro-batch {step.micro_batch} × {step.seq} tokens, "
            f"activation checkpointing {'on' if step.checkpointing else 'off'}"
            + (f", gradient accumulation {step.grad_accum}" if step.grad_accum > 1 else ""))
    phases = text_table(["phase", "GPU/rank"], [[p + ("  <- peak" if p == at else ""), format_bytes(step.phase_bytes(p))]
                                                for p in PHASES])
    terms = sorted(step.peak_terms.items(), key=lambda kv: -kv[1])
    rows = [[TERM_LABELS.get(k, k), format_bytes(v)] for k, v in terms]
    return "\n".join([head, "", phases, "", f"Terms at the peak ({at}):",
                      text_table(["term", "GPU/rank"], rows + [["total", format_bytes(step.peak_bytes)]]),
                      "", (f"Between steps {format_bytes(step.gpu_bytes)}; leave headroom for the allocator's cache "
                           "(max_memory_reserved) above the peak.")])


def plan_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"{PROG} plan", description="The DeepSpeed configurations that fit, cheapest first "
                      "(dscourse.memory.planner states the cost model).")
    p.add_argument("--model-config", metavar="PATH", required=True, help="a config.json, or a shipped config's name")
    p.add_argument("--gpus", type=positive_int, required=True, help="total number of GPUs")
    p.add_argument("--gpu-memory", type=_bytes, required=True, help="memory of one GPU, e.g. 80GB")
    p.add_argument("--gpus-per-node", type=positive_int, default=None)
    p.add_argument("--host-memory", type=_bytes, default=None, help="RAM of one node, e.g. 512GB")
    p.add_argument("--seq", type=positive_int, required=True, help="sequence length")
    p.add_argument("--global-batch", type=positive_int, default=None, help="sequences per optimizer step")
    p.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM,
                   help=f"fraction above the peak left for the allocator's cache (default {DEFAULT_HEADROOM})")
    p.add_argument("--top", type=positive_int, default=8, help="how many to list")
    p.add_argument("--json", action="store_true", help="one JSON object, each candidate with its ds_config")
    return p


def run_plan(argv) -> dict | str:
    from ..config import check_config

    args = plan_parser().parse_args(argv)
    if not 0 <= args.headroom < 10:
        raise FormulaError(f"--headroom is a fraction of the peak (0.2 = 20%), not {args.headroom}")
    arch = _model_config(args.model_config)
    result = plan(arch, args.gpus, args.gpu_memory, args.seq, args.gpus_per_node, args.host_memory,
                  args.global_batch, args.headroom)
    if isinstance(result, Shortfall):
        raise FormulaError(result.message())
    shown = result[:args.top]
    rows = []
    for c in shown:
        cfg = c.ds_config()
        problems = [str(p) for p in check_config(cfg, world_size=args.gpus) if p.severity == "error"]
        if problems:
            raise FormulaError(f"the builder's config for {c.name} fails the checker: {problems[0]}")
        rows.append({**c.as_dict(), "ds_config": cfg})
    if args.json:
        return {"model": arch.name, "params": arch.params, "gpus": args.gpus, "gpu_memory": args.gpu_memory,
                "host_memory": args.host_memory, "seq": args.seq, "headroom": args.headroom, "fits": len(result),
                "candidates": rows}
    table_rows = [[i + 1, r["variant"], r["micro_batch"], r["grad_accum"], "on" if r["checkpointing"] else "off",
                   format_bytes(r["peak_gpu_bytes"]), r["peak_phase"], format_bytes(r["host_bytes_per_node"]),
                   f"{r['step_seconds']:.3g} s"] for i, r in enumerate(rows)]
    best = rows[0]
    return "\n".join([
        (f"{arch.name} ({arch.params / 1e9:.2f}B) on {args.gpus} GPU(s) of {args.gpu_memory / 1e9:g} GB, seq {args.seq}: "
         f"{len(result)} configurations fit with {100 * args.headroom:.0f}% headroom; the cheapest {len(rows)}:"), "",
        text_table(["#", "variant", "micro-batch", "accum", "checkpointing", "peak/GPU", "at", "host/node",
                    "step (model)"], table_rows),
        "", "ds_config.json of #1 (dscourse.config.build_config, passed by the checker):",
        json.dumps(best["ds_config"], indent=1),
        *(["", ("with activation checkpointing: model.gradient_checkpointing_enable("
                "gradient_checkpointing_kwargs={\"use_reentrant\": False})")] if best["checkpointing"] else [])])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        out = run_plan(argv[1:]) if argv[:1] == ["plan"] else run(argv)
    except (UsageError, FormulaError, ValueError) as e:  # FormulaError covers unreadable config files
        print(f"{PROG}: error: {_say(e)}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=1) if isinstance(out, dict) else out)
    return 0
