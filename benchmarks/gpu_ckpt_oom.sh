#!/usr/bin/env bash
# One call on a lent GPU: activation checkpointing's time cost and an out-of-memory walkthrough on a 24 GB card.
#   bash benchmarks/gpu_ckpt_oom.sh OUT_DIR        (DeepSpeed importable; TORCH_CUDA_ARCH_LIST set for the JIT ops)
# 1. --checks: Llama-3.2-1B as a reader with a 24 GB card would try it, each point in its own process capped at
#    24e9 bytes (set_per_process_memory_fraction): ZeRO-2 -> out of memory in the optimizer step, checkpointing does
#    not help; + optimizer offload fits; 4 x 4096 tokens per micro-batch -> out of memory in backward even with
#    checkpointing; the same tokens per step as accumulation of smaller micro-batches -> fits.
# 2. the grid: ZeRO-2 and ZeRO-3, checkpointing off and on in one engine, 6 steps per point, one worker at a time
#    (timings are not shared with another process), for the step time with and without checkpointing.
set -euo pipefail
out="${1:?usage: gpu_ckpt_oom.sh OUT_DIR}"
L=24000000000
m='"model":"Llama-3.2-1B"'
checks="[{$m,\"variant\":\"2\",\"micro_batch\":1,\"seq\":2048,\"checkpointing\":false,\"grad_accum\":1,\"limit\":$L},
{$m,\"variant\":\"2\",\"micro_batch\":1,\"seq\":2048,\"checkpointing\":true,\"grad_accum\":1,\"limit\":$L},
{$m,\"variant\":\"2+oo\",\"micro_batch\":1,\"seq\":2048,\"checkpointing\":false,\"grad_accum\":1,\"limit\":$L},
{$m,\"variant\":\"2+oo\",\"micro_batch\":4,\"seq\":4096,\"checkpointing\":false,\"grad_accum\":1,\"limit\":$L},
{$m,\"variant\":\"2+oo\",\"micro_batch\":4,\"seq\":4096,\"checkpointing\":true,\"grad_accum\":1,\"limit\":$L},
{$m,\"variant\":\"2+oo\",\"micro_batch\":2,\"seq\":4096,\"checkpointing\":true,\"grad_accum\":2,\"limit\":$L},
{$m,\"variant\":\"2+oo\",\"micro_batch\":1,\"seq\":4096,\"checkpointing\":false,\"grad_accum\":4,\"limit\":$L},
{$m,\"variant\":\"2+oo\",\"micro_batch\":1,\"seq\":4096,\"checkpointing\":true,\"grad_accum\":4,\"limit\":$L}]"
python3 "$(dirname "$0")/gpu_peak.py" --out "$out/ckpt_oom.jsonl" --checks "$(echo "$checks" | tr -d '\n')" \
  --models Llama-3.2-1B gpt2-large --variants 2 3 --steps 6 --parallel 1 --no-expandable \
  --deadline 430 --worker-timeout 200
