"""The measurement records behind the book's numbers: what each file in ``dscourse/data`` holds, for which section,
and where and how it was measured (read from the file's own provenance). The appendix page lists them all
(``{dscourse-records}``, book/_ext/measurement_records.py); a test keeps this list and the folder in step.

Pure: the standard library only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from . import package_path

DATA = package_path("data")

# (file, section, what it holds[, the command, where the file's provenance does not record it]): one line each, in
# the reader's words; the details are in dscourse/data/README.md
RECORDS = [
    ("gpu_memory_gpt2-350m.json", "4.1", "两步之间的显存，ZeRO-0/1/2/3 与三种 offload：allocated 公式的校准数据",
     "python3 benchmarks/gpu_memory.py --shapes gpt2-350m --out ..."),
    ("gpu_memory_llama-1b.json", "4.1", "同上，Llama 1B：留出集（另一种架构），不参与校准",
     "python3 benchmarks/gpu_memory.py --shapes llama-1b --out ..."),
    ("gpu_memory_gpt2-1.3b.json", "4.1", "同上，GPT-2 1.3B：留出集（另一种规模），前 7 个变体",
     "python3 benchmarks/gpu_memory.py --shapes gpt2-1.3b --out ..."),
    ("gpu_memory_gpt2-1.3b-offload-param.json", "4.1", "GPT-2 1.3B 的第 8 个变体（ZeRO-3 + 优化器与参数 offload）",
     "python3 benchmarks/gpu_memory.py --shapes gpt2-1.3b --variants 3+oo+op --out ..."),
    ("gpu_activations.json", "4.1", "前向传播留给反向的激活值：激活值公式的检验",
     "python3 benchmarks/gpu_memory.py --shapes gpt2-350m llama-1b gpt2-1.3b --micro-batches 1 4 --variants 2 --steps 1 --out ..."),
    ("gpu_peak_h200.json", "4.1", "一步之内的峰值：4 个模型 × 7 个 ZeRO 变体 × 两种尺寸 × checkpointing 开关，逐阶段"),
    ("gpu_peak_checks_h200.json", "4.1", "规划器首选配置的实测，以及 expandable_segments 的重测"),
    ("gpu_peak_checks_ga_h200.json", "4.1", "梯度累积项写好之后才测的六个点：规划器的新首选与留出的累积点"),
    ("gpu_ckpt_oom_h200.json", "4.1", "24 GB 显存上限下的 OOM 排查，以及 activation checkpointing 的时间代价"),
    ("gpu_throughput_gpt2-350m.json", "4.3", "吞吐：7 个变体 × micro-batch 1–16 与梯度累积，五台机器上测过"),
    ("gpu_throughput_gpt2-1.3b.json", "4.3", "吞吐：GPT-2 1.3B，ZeRO-2 与锁页的优化器 offload"),
    ("gpu_checkpoint_gpt2-1.3b.json", "4.3", "save_checkpoint 与 save_16bit_model 的用时和磁盘字节"),
    ("gpu_repeatability.json", "4.3", "GPU 上的逐位可重复：续训、Accelerate 命令行与配置文件、两种注意力内核"),
    ("gpu_notebooks.json", "4.3", "每个 notebook 在 GPU 规模下从头跑到尾：逐单元的用时与显存",
     "DSCOURSE_SCALE=gpu python3 tools/run_notebooks_gpu.py --notebooks ... --out report.json"),
    ("gpu_notebooks_attempts.json", "4.3", "GPU 规模下失败或超时的运行，以及每一处的修正"),
    ("gpu_precision.json", "4.4", "bf16 与 fp16：吞吐、跳过的步、逐步的 loss scale"),
    ("cpu_load_memory.json", "4.3", "每个 rank 加载同一个检查点时的主机内存：三种加载方式，2 和 4 个 CPU rank"),
    ("gpu_load_memory_h200.json", "4.3", "同上，Llama 1B 在一张 H200 上（一个 rank）：ZeRO-3 的分区在显存里"),
    ("cpu_comm_volume.json", "4.5", "DeepSpeed 自己的通信日志在 2 和 4 个 CPU rank 上记下的每一次集合通信"),
]


class RecordError(ValueError):
    """A record names a file that is not there, or a file has no provenance."""


def _provenance(data: dict) -> dict:
    prov = data.get("provenance") or data.get("environment") or {}
    if not prov and data.get("attempts"):  # a log of runs: each attempt's report carries its environment
        first = data["attempts"][0]
        prov = {**first.get("report", {}).get("environment", {}), "command": [a["command"] for a in data["attempts"]]}
    return prov


# where the lent machine's command wrote or scratched: its output folder and /tmp, which mean nothing to a reader
_MACHINE_PATHS = re.compile(r"(?:/root/out/|\$OUT/|/tmp/)")


def reader_command(command: str) -> str:
    """A recorded command as a reader would type it: paths of the machine that ran it dropped to file names."""
    return _MACHINE_PATHS.sub("", command)


def _commands(prov: dict) -> list[str]:
    cmd = prov.get("command")
    if isinstance(cmd, list):
        cmds = cmd
    elif cmd:
        cmds = [cmd]
    elif prov.get("script"):
        cmds = [" ".join(["python3", prov["script"], *prov.get("argv", [])])]
    else:
        cmds = []
    return [reader_command(c) for c in cmds]


def record(name: str, section: str, what: str, command: str | None = None, folder: Path | None = None) -> dict:
    """One record with the file's own provenance: device, versions, date and the commands that wrote it."""
    path = Path(folder or DATA) / name
    if not path.exists():
        raise RecordError(f"{name}: listed in dscourse.records.RECORDS but not in {path.parent}")
    prov = _provenance(json.loads(path.read_text()))
    device = prov.get("gpu") or ("CPU ranks" if name.startswith("cpu_") else None)
    if not device or not prov.get("date"):
        raise RecordError(f"{name}: no provenance (device and date) in the file")
    return {"file": name, "section": section, "what": what, "device": device.split(",")[0],
            "date": str(prov["date"])[:10],
            "versions": ", ".join(f"{k} {prov[k]}" for k in ("torch", "deepspeed", "transformers") if prov.get(k)),
            "commands": _commands(prov) or ([command] if command else [])}


def records(folder: Path | None = None) -> list[dict]:
    return [record(*entry, folder=folder) for entry in RECORDS]
