#!/usr/bin/env bash
# One call on a lent GPU for 4.7: ZeRO-Infinity's NVMe offload against CPU offload, and the peak of LoRA fine-tuning.
#   bash benchmarks/gpu_nvme_lora.sh OUT_DIR [nvme|lora|all]   (DeepSpeed and PEFT importable; TORCH_CUDA_ARCH_LIST set for the JIT ops;
#                                              AIO_DEBS: a folder of Debian's libaio1 and libaio-dev .deb files when the
#                                              machine has no libaio, unpacked into a private prefix)
# 1. nvme: --checks, one process at a time (step times are not shared): Qwen2.5-0.5B with ZeRO-3, parameters and
#    optimizer state offloaded to the CPU, to NVMe (a folder on the machine's local disk), and only the optimizer
#    state to either; 4 steps each, the swap files' bytes recorded.
# 2. lora: the LoRA grid (r = 16 on q_proj, v_proj, base frozen): three models, ZeRO-2 and ZeRO-3, two sizes, activation
#    checkpointing off and on, two at a time; the first model's steps also traced (what is live at each phase's peak).
set -euo pipefail
out="${1:?usage: gpu_nvme_lora.sh OUT_DIR [nvme|lora|all]}"
part="${2:-all}"
here="$(dirname "$0")"
if [ -n "${AIO_DEBS:-}" ]; then
  prefix=/tmp/libaio
  for f in "$AIO_DEBS"/*.deb; do dpkg -x "$f" "$prefix"; done
  lib="$prefix/usr/lib/x86_64-linux-gnu"
  export CFLAGS="-I$prefix/usr/include" LDFLAGS="-L$lib" LD_LIBRARY_PATH="$lib:${LD_LIBRARY_PATH:-}"
  export CPATH="$prefix/usr/include" LIBRARY_PATH="$lib"  # for the op's own compile and link, not only the probe
fi
m='"model":"Qwen2.5-0.5B","micro_batch":1,"seq":2048,"checkpointing":false,"grad_accum":1'
checks="[{$m,\"variant\":\"3+oo+op\"},{$m,\"variant\":\"3+no+np\"},{$m,\"variant\":\"3+oo\"},{$m,\"variant\":\"3+no\"}]"
if [ "$part" != lora ]; then
  python3 "$here/gpu_peak.py" --out "$out/nvme.jsonl" --checks "$checks" --no-grid --no-expandable --steps 4 \
    --parallel 1 --deadline 240 --worker-timeout 200
fi
if [ "$part" != nvme ]; then
  python3 "$here/gpu_peak.py" --out "$out/lora.jsonl" --lora 16 --models Llama-3.2-1B Qwen2.5-0.5B Qwen3-0.6B \
    --variants 2 3 --steps 2 --parallel 2 --no-expandable --deadline 240 --worker-timeout 150
fi
