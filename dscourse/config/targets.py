"""Who reads the config: plain DeepSpeed, the Hugging Face Trainer (through Accelerate), or Accelerate alone."""

from __future__ import annotations

TARGETS = {"deepspeed": "plain DeepSpeed (deepspeed.initialize)",
           "hf": "the Hugging Face Trainer / Accelerate",
           "accelerate": "Accelerate without the Trainer (accelerate launch, your own training loop)"}


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")


def through_accelerate(target: str) -> bool:
    """The Trainer and Accelerate read the file with json.load and pass the config through the DeepSpeed plugin."""
    return target in ("hf", "accelerate")
