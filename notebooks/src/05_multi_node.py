# %% [markdown]
# # 4.5 实验：hostfile、启动器、预检与通信量
#
# 原文的目录列出了“多节点训练”，正文却没有写。多节点正是用户走出单机、也最容易卡住的地方：没配免密 SSH（`ssh ... exit 255`）、
# 没装 pdsh、NCCL/gloo 选错了网卡、环境变量没有传到其他节点、`--master_addr` 写错——多数表现为**一动不动地挂住**。
# 本 notebook 把这些都落到能运行的代码上：
#
# 1. hostfile 的格式与 `--include/--exclude/--num_nodes/--num_gpus`：用 DeepSpeed 0.19.8 自己的解析函数验证；
# 2. 每一种启动方式的确切命令：`deepspeed`（pdsh / openmpi / mvapich / slurm / `--no_ssh`）、`torchrun`、`accelerate launch`、
#    Slurm 批处理脚本；`.deepspeed_env` 与哪些环境变量会被转发；一个会校验输入的命令生成器；
# 3. **一台机器上真实的两节点训练**：两个启动器进程（node_rank 0 和 1）经 TCP 会合（rendezvous），一起用 ZeRO-2 训练；
#    机器允许时（root），两个“节点”各在一个网络命名空间（network namespace）里，有自己的网卡和 IP 地址；
# 4. 预检（preflight）命令行工具：hostfile 语法、主机名解析、非交互 SSH、master 端口、各节点版本一致，每个失败都给出修法，且绝不挂住；
# 5. 通信量：论文的 2Ψ/3Ψ 与 DeepSpeed 自己的 comms logger 实测的字节（默认的 ZeRO-1/2 是 3Ψ），换算成 NVLink、InfiniBand、以太网上的时间；
#    在 CPU rank 上实测 all-reduce 带宽；
# 6. 经典故障（挂住、ssh 255、缺 pdsh、选错网卡）的症状、诊断命令与修法。

# %%
# NBVAL_IGNORE_OUTPUT
import deepspeed
import torch

from dscourse import scale

print(f"torch {torch.__version__}, deepspeed {deepspeed.__version__}")
print(f"scale: {scale.scale()} ({scale.ranks()} ranks)")

# %% [markdown]
# ## 1. hostfile：每行一个节点
#
# `deepspeed` 启动器用一个 MPI 风格的 hostfile 描述可用的机器：每行 `主机名 slots=GPU数`。默认路径是 `/job/hostfile`，
# 用 `--hostfile` 指定别的文件。DeepSpeed 0.19.8 的解析函数是 `deepspeed/launcher/runner.py` 里的 `_parse_hostfile`：
# 对每一行（去掉首尾空白后）做 `re.search(r'^(\S+)\s+slots=(\d+)')`，跳过空行和 `#` 开头的行，同一主机出现两次、某行不匹配、
# 一个主机都没有，都抛 `ValueError`。`dscourse.multinode.hostfile.parse_hostfile` 照搬这一语义，只是报错时说清楚该怎么写。
# 下面把同一批文本同时交给两者：

# %%
import logging

from deepspeed.launcher.runner import _parse_hostfile
from deepspeed.utils import logger as ds_logger

from dscourse.multinode.hostfile import HostfileError, lint_hostfile, parse_hostfile
from dscourse.tables import text_table

ds_logger.setLevel(logging.CRITICAL)  # DeepSpeed also logs each refused file (timestamped); the table shows it
samples = ["worker-1 slots=8\nworker-2 slots=8\n", "# two nodes\nworker-1 slots=8 # H100\n\nworker-2 slots=8\n",
           "worker-1 slots=8x\n", "worker-1 slots = 8\n", "worker-1\n", "worker-1 slots=8\nworker-1 slots=8\n", "\n"]
rows = []
for text in samples:
    try:
        theirs = dict(_parse_hostfile(text.splitlines(keepends=True)))
    except ValueError:
        theirs = "ValueError"
    try:
        ours = dict(parse_hostfile(text))
    except HostfileError as e:
        ours = f"HostfileError: {e}"
    assert (theirs == "ValueError") == isinstance(ours, str) and (isinstance(ours, str) or ours == theirs)
    rows.append([repr(text), str(theirs), ours if isinstance(ours, str) else "same"])
print(text_table(["hostfile text", "DeepSpeed _parse_hostfile", "dscourse parse_hostfile"], rows, align_right_from=9))

# %% [markdown]
# 注意第 2、3 行：DeepSpeed 的正则只锚定行首，`slots=8 # H100` 和 `slots=8x` 都被读成 8，不报错。这种“静默接受”由 `lint_hostfile` 报告：

# %%
for lint in lint_hostfile("worker-1 slots=8x\nworker-2 slots=0\nworker-3 slots=8 max_slots=8\n"):
    print(lint)

# %% [markdown]
# ### 选择节点与 GPU：`--include`、`--exclude`、`--num_nodes`、`--num_gpus`
#
# `--include "worker-0@worker-1:0,2"` 表示 worker-0 的全部 GPU 加上 worker-1 的 0 号和 2 号；`--exclude "worker-1:0"` 表示除此之外的全部；
# `--num_nodes N` 取 hostfile 的前 N 个主机，`--num_gpus G` 取每个主机的 0..G-1 号 GPU。前两者与后两者不能同时用
# （`runner.main()`：“Cannot specify num_nodes/gpus with include/exclude”）。rank 按 hostfile 的顺序编号：第一个主机的第一块 GPU 是 rank 0，
# 它所在的主机就是 master。`resolve` 的每一行都与 DeepSpeed 自己的 `parse_inclusion_exclusion` + `apply_num_nodes_and_gpus` 对照：

# %%
from collections import OrderedDict

from deepspeed.launcher.runner import apply_num_nodes_and_gpus, parse_inclusion_exclusion

from dscourse.multinode.hostfile import ranks, resolve

pool = OrderedDict([("worker-0", 4), ("worker-1", 4), ("worker-2", 2)])
cases = [("", "", -1, -1), ("worker-0@worker-1:0,2", "", -1, -1), ("", "worker-1:0", -1, -1), ("", "worker-2", -1, -1),
         ("", "", 2, -1), ("", "", -1, 1), ("worker-3", "", -1, -1), ("worker-1", "", 2, -1)]
rows = []
for inc, exc, nn, ng in cases:
    flags = " ".join(f for f in (f'--include "{inc}"' if inc else "", f'--exclude "{exc}"' if exc else "",
                                 f"--num_nodes {nn}" if nn > 0 else "", f"--num_gpus {ng}" if ng > 0 else "") if f)
    try:
        if (nn >= 0 or ng >= 0) and (inc or exc):
            raise ValueError("Cannot specify num_nodes/gpus with include/exclude")
        theirs = dict(apply_num_nodes_and_gpus(parse_inclusion_exclusion(pool, inc, exc), nn, ng))
    except ValueError as e:
        theirs = f"ValueError: {e}"
    try:
        active = resolve(pool, inc, exc, nn, ng)
        ours = dict(active)
        world = len(ranks(active))
    except HostfileError as e:
        ours, world = f"HostfileError: {e}", "-"
    assert ours == theirs or (isinstance(ours, str) and isinstance(theirs, str))
    rows.append([flags or "(none)", str(ours), world])
print("hostfile: worker-0 slots=4, worker-1 slots=4, worker-2 slots=2\n")
print(text_table(["flags", "hosts: GPU ids used (DeepSpeed agrees)", "ranks"], rows, align_right_from=2))

# %% [markdown]
# ## 2. 启动方式：每个节点上到底敲什么
#
# `dscourse.multinode.commands.build_plan(launcher, nodes, gpus_per_node, master_addr, ...)` 给出每个节点上的确切命令和需要的文件。
# 各启动器的参数在测试里逐一交给 DeepSpeed、torch、accelerate 自己的参数解析器解析过。两节点、每节点 8 GPU、master 为 10.0.0.1：

# %%
from dscourse.multinode.commands import build_plan

for launcher in ("deepspeed", "deepspeed-nossh", "torchrun", "accelerate", "slurm-sbatch"):
    plan = build_plan(launcher, nodes=2, gpus_per_node=8, master_addr="10.0.0.1",
                      script="train.py", script_args=["--deepspeed", "ds_config.json"])
    print(plan.text(), end="\n\n" + "=" * 100 + "\n\n")

# %% [markdown]
# 要点：
#
# - **`deepspeed --hostfile`（默认 pdsh）**：只在 node 0 上敲一次。它先用 `ssh -o PasswordAuthentication=no <第一个主机> hostname` 检查免密 SSH，
#   再由 pdsh 登录**每一个**主机（包括 node 0 自己），执行 `cd <当前目录>; <当前 python 的绝对路径> -u -m deepspeed.launcher.launch --node_rank=%n ...`
#   （`multinode_runner.py` 的 `PDSHRunner.get_cmd`）。所以每个节点上必须有**同一路径的 Python 环境和同一个工作目录**。
#   不写 `--master_addr` 时，DeepSpeed 用 `ssh <第一个主机> hostname -I` 的第一个地址——常常是 docker0 之类的错误网卡，最好显式写上。
# - `--launcher openmpi|mvapich|slurm`：由 `mpirun`/`srun` 启动每个 rank。openmpi 与 mvapich 不接受 `--include/--exclude/--num_nodes/--num_gpus`
#   （`validate_args` 直接报错）；openmpi 默认加 `--mca btl_tcp_if_include eth0`，网卡不叫 eth0 时要用 `--launcher_args` 覆盖。
# - **`--no_ssh --node_rank i`**（0.14.5 起）：每个节点各自执行一条命令，不需要 SSH，hostfile 在每个节点上都要一样。
# - **`torchrun`**：每个节点一条命令，`--nnodes/--nproc_per_node/--node_rank/--master_addr/--master_port`（静态会合）；
#   或者 `--rdzv_backend c10d --rdzv_endpoint host:port`，所有节点命令完全相同，节点编号按到达顺序分配。
# - **`accelerate launch`**：`--num_processes` 是**所有机器**的进程总数；`--use_deepspeed` 且多机时，默认的
#   `--deepspeed_multinode_launcher` 是 pdsh（又回到 SSH），要每台机器各自启动就写 `standard`。
# - **Slurm**：`srun` 在每个节点上启动一个 torchrun。`--node_rank $SLURM_NODEID` 写在 sbatch 脚本的 srun 行里是个陷阱：
#   变量在批处理脚本里只展开一次（都是 0）；用 c10d 会合就不需要节点编号。
#
# ### 哪些环境变量能到达其他节点
#
# 只有走 SSH/MPI 的路径（pdsh、openmpi、mvapich、slurm）会转发变量：DeepSpeed 把**名字以 `EXPORT_ENVS` 中某项开头**的变量，
# 加上加速器的 `export_envs()`（CUDA 上是 `NCCL`，CPU 上没有），再加上 `~/.deepspeed_env` 和 `./.deepspeed_env`
# （文件名可由 `DS_ENV_FILE` 改）里的每一行，拼成 `export K=V;` 放在远端命令前面。其余变量（`CUDA_HOME`、`LD_LIBRARY_PATH`、`HF_HOME`……）
# 一概不转发，远端只有它登录 shell 的环境。这是 DeepSpeed 0.19.8 里的原值：

# %%
import inspect

from deepspeed.launcher import runner

print("EXPORT_ENVS =", runner.EXPORT_ENVS)
print("DEEPSPEED_ENVIRONMENT_NAME =", repr(runner.DEEPSPEED_ENVIRONMENT_NAME), "(read from ~ and from .)")
from deepspeed.accelerator import get_accelerator

print(f"{type(get_accelerator()).__name__}.export_envs() = {get_accelerator().export_envs()}")
source = inspect.getsource(runner.main)
start = source.index("        for environ_path in DEEPSPEED_ENVIRONMENT_PATHS:")
print("\n" + source[start:source.index("        if args.launcher == PDSH_LAUNCHER:", start)].rstrip())

# %% [markdown]
# 最后三行决定了 `.deepspeed_env` 的格式：每一行都按第一个 `=` 拆成两半，**没有跳过空行和注释**。
# 文件末尾多一个空行，`"\n".split("=", maxsplit=1)` 只有一段，解包失败，启动器直接崩溃；`# NCCL_DEBUG=INFO` 这样的注释行会变成一个
# 名为 `# NCCL_DEBUG` 的 “变量”。用同一段代码看一下：

# %%
for line in ["NCCL_SOCKET_IFNAME=eth1\n", "NCCL_DEBUG=INFO\n", "\n"]:
    try:
        key, val = line.split("=", maxsplit=1)
        print(f"{line!r:30} -> export {key.strip()}={val.strip()}")
    except ValueError as e:
        print(f"{line!r:30} -> ValueError: {e}")

# %% [markdown]
# `--no_ssh` 路径和 torchrun **不读** `.deepspeed_env`（`runner.py` 第 537 行：`--no_ssh` 时 `multi_node_exec` 为假，上面这段只在多节点分支里）：
# 那里每个节点的命令自己带着环境，要在各节点上 `export`。accelerate 分两条路：`--num_machines` 大于 1 且
# `--deepspeed_multinode_launcher` 不是 `standard`（默认是 `pdsh`）时，`accelerate launch` 把它的整个环境**追加**写进 `./.deepspeed_env`
# （`accelerate/commands/launch.py` 第 1060–1064 行），再调用 `deepspeed --hostfile ... --launcher pdsh`（`accelerate/utils/launch.py`
# 第 452–460 行），由上面这段代码读出并转发：node 0 的全部变量都到达其他节点，文件每启动一次就长一截。
# `--deepspeed_multinode_launcher standard`（下面生成器给 accelerate 的命令）走 torchrun，不写也不读它。
#
# ### 交互：启动命令生成器
#
# 选择启动方式、节点数、每节点 GPU 数、master 地址和端口（deepspeed 启动器还可以填 `--include/--exclude`，按 DeepSpeed 的规则解析），
# 下面给出每个节点的命令；输入有问题时给出原因和修法，不给命令。
# 在静态网页里控件需要内核才能响应；在 Colab 或 Jupyter 里运行本 notebook 即可交互。

# %%
from dscourse.multinode.widget import LaunchCommandBuilder

builder = LaunchCommandBuilder(launcher="torchrun", nodes=2, gpus_per_node=8, master_addr="10.0.0.1")
builder.widget

# %%
# The same builder driven from code, as a reader would click it.
for values in ({"launcher": "deepspeed-nossh", "nodes": 3}, {"master_addr": "127.0.0.1"},
               {"master_addr": "10.0.0.1", "hosts": "gpu-a,gpu-a,gpu-b"}, {"hosts": "", "master_port": 80},
               {"master_port": 29500, "launcher": "accelerate", "nodes": 4, "gpus_per_node": 4},
               {"launcher": "deepspeed", "include": "worker-1@worker-3:0,1"}, {"launcher": "deepspeed-openmpi"},
               {"launcher": "torchrun"}, {"include": "", "nodes": 2, "gpus_per_node": 8}):
    plan = builder.set(**values)
    verdict = "ok" if plan.ok else "refused"
    print(f"{values} -> {verdict}: {plan.world_size} ranks, {len(plan.commands)} command(s)")
    for p in plan.problems:
        print(f"    {p.severity}: {p}")

# %% [markdown]
# ## 3. 真实的两节点训练（在一台机器上）
#
# 下面启动两个启动器进程，一个当 node 0、一个当 node 1，每个节点 1 个 rank（本机只有 2 个 CPU 核）。它们经 TCP 会合到 master 地址和端口，
# 组成 world size 2 的 gloo 进程组，用 ZeRO-2 一起训练 `gpt2-tiny` 3 步。命令就是上一节生成器给出的命令（只把 `torchrun`/`deepspeed`
# 换成了 `python -m ...`），由 `dscourse.launch.run_nodes` 同时启动、共用一个超时、出错或超时时杀掉全部进程树。
#
# 机器允许时（root 且能创建网络命名空间），每个“节点”在自己的网络命名空间里运行：各有一块名为 `eth0` 的虚拟网卡（veth，经一个网桥相连）和自己的 IP
# （10.10.0.1、10.10.0.2），看不到对方的 loopback——与两台真机器在同一个子网里一样。不允许时退回到本机 loopback 上的两个进程。
# 下一格打印这次用的是哪一种（CI 上多半是 loopback，所以这一格的输出不参与比较）：

# %%
# NBVAL_IGNORE_OUTPUT
# (which mode ran depends on the machine: root with ip netns, or not)
from dscourse.multinode import netns

ok, why = netns.available()
print(f"network namespaces: {'yes' if ok else 'no'} ({why})")
print("two-node mode:", "netns: each node has its own network stack and address" if ok
      else "loopback: both nodes share this machine's 127.0.0.1")

# %%
import json
import tempfile
from pathlib import Path

from dscourse.config import build_config
from dscourse.multinode.simulate import run_nodes_job

work = Path(tempfile.mkdtemp(prefix="dscourse-05-"))
config = work / "ds_config.json"
config.write_text(json.dumps(build_config(2, micro_batch=2, world_size=2)))
jobs = {}
for launcher in ("torchrun", "deepspeed-nossh"):
    jobs[launcher] = run_nodes_job(launcher, "dscourse.scripts.train_step",
                                   ["--config", str(config), "--steps", "3"], nodes=2, gpus_per_node=1,
                                   timeout=600, out_dir=work / launcher)
rows = []
for launcher, job in jobs.items():
    for r in sorted(job.result.ranks, key=lambda r: r["rank"]):
        rows.append([launcher, r["rank"], f"node {r['rank']}", r["world_size"], f"ZeRO-{r['zero_stage']}",
                     r["optimizer_class"], len(r["losses"])])
print(text_table(["launcher", "rank", "node", "world size", "stage", "optimizer", "steps"], rows))
same = all(a["losses"] == b["losses"] for a, b in zip(sorted(jobs["torchrun"].result.ranks, key=lambda r: r["rank"]),
                                                      sorted(jobs["deepspeed-nossh"].result.ranks,
                                                             key=lambda r: r["rank"])))
print(f"\nthe two launchers gave identical losses on every rank: {same}")
assert same and all(r["world_size"] == 2 and r["zero_stage"] == 2 for j in jobs.values() for r in j.result.ranks)

# %% [markdown]
# 两个节点各自计算自己那份数据的 loss（所以 rank 0 与 rank 1 的 loss 不同），梯度经 ZeRO-2 的 reduce-scatter 汇总，参数经 all-gather 同步。
# 两种启动方式得到的数完全一样：它们只是用不同的方式把同样的 `RANK`、`WORLD_SIZE`、`MASTER_ADDR`、`MASTER_PORT` 交给进程。
# 真正执行的命令如下（路径和地址因机器而异，不参与比较）：

# %%
# NBVAL_IGNORE_OUTPUT
# (interpreter path, addresses and temporary directories differ between machines)
for launcher, job in jobs.items():
    print(f"[{launcher}] mode {job.cluster.mode}, nodes at {', '.join(job.cluster.addresses)}")
    for cmd in job.result.commands:
        print("   ", " ".join(cmd))

# %% [markdown]
# 再在两个节点之间跑一次 all-reduce 基准（`dscourse.scripts.allreduce_bench`），每个 rank 记下它看得见的 IPv4 地址：
# 在命名空间模式下，rank 0 只看得见 10.10.0.1，rank 1 只看得见 10.10.0.2——它们确实像两台主机一样，经网卡而不是进程内存交换数据。

# %%
# NBVAL_IGNORE_OUTPUT
# (addresses and bandwidth depend on the machine and the mode)
cross = run_nodes_job("torchrun", "dscourse.scripts.allreduce_bench",
                      ["--sizes", "1e6,1e7", "--ops", "all_reduce", "--iters", "5"], timeout=600,
                      out_dir=work / "cross")
for r in sorted(cross.result.ranks, key=lambda r: r["rank"]):
    big = [e for e in r["results"] if e["size_bytes"] >= 1e7][0]
    print(f"rank {r['rank']}: addresses {r['addresses'] or '(loopback only)'}, GLOO_SOCKET_IFNAME={r['gloo_socket_ifname']}, "
          f"all-reduce 10 MB: busbw {big['busbw'] / 1e9:.2f} GB/s")

# %% [markdown]
# ### 选错网卡会怎样
#
# gloo 与 NCCL 都要决定“用哪块网卡、告诉对方哪个地址”。不指定时，gloo 解析本机主机名得到地址；NCCL 按自己的规则挑一块网卡
# （排除 `lo` 和 `docker*` 等）。在一台 `hostname` 解析成 127.0.0.1、或者第一块网卡是管理网/docker 网桥的机器上，
# 各 rank 就把一个对方到不了的地址告诉对方。上面的运行都设了 `GLOO_SOCKET_IFNAME=eth0`（命名空间里的网卡名）。
# 下面故意设成 `lo`：两个节点都告诉对方“到 127.0.0.1 来连我”，而对方的 127.0.0.1 是它自己。只有命名空间模式能演示这一点
# （loopback 模式下两个节点本来就共用 127.0.0.1）：

# %%
# NBVAL_IGNORE_OUTPUT
# (only possible in netns mode; the error text names a random port)
import time

from dscourse.launch import LaunchError

if jobs["torchrun"].cluster.mode == "netns":
    try:
        run_nodes_job("torchrun", "dscourse.scripts.allreduce_bench",
                      ["--sizes", "1e4", "--ops", "all_reduce", "--timeout", "5"],  # a 5 s process-group timeout
                      timeout=60, out_dir=work / "wrong-if", env={"GLOO_SOCKET_IFNAME": "lo"})
        print("unexpected: it worked")
    except LaunchError as e:
        print("\n".join(ln for ln in str(e).splitlines() if "Gloo" in ln or "nodes failed" in ln or "---" in ln))
else:
    print("skipped: the nodes share one loopback interface here, so every interface reaches the other node")

# %% [markdown]
# 这里失败得很快（`Connection refused`），因为 127.0.0.1 上没有人监听。真实集群上，如果错选的地址被防火墙静默丢包，
# 同样的错误就表现为**挂住**，直到超时：DeepSpeed 进程组的默认超时是 10 分钟（`deepspeed/constants.py` 的 `default_pg_timeout`，环境变量 `DEEPSPEED_TIMEOUT` 可改，单位分钟）。NCCL 对应的变量是 `NCCL_SOCKET_IFNAME`，
# 支持前缀列表（`eth`、`=eth0` 精确匹配、`^docker` 排除）；`NCCL_DEBUG=INFO` 会打印它选中的网卡（`NET/Socket : Using [0]eth0:10.0.0.1<0>`）。

# %% [markdown]
# ### `--master_addr` 写错：挂住
#
# 再让 node 1 拿到一个错误的 master 地址（一个没有机器的地址）。node 1 一直尝试连接，node 0 一直等第二个节点，**谁都不报错**——
# 这就是多节点训练里最常见的“挂住”。`run_nodes` 给两个节点一个共同的期限（这里 8 秒），到期就杀掉两边的整个进程树：

# %%
t0 = time.time()
try:
    run_nodes_job("torchrun", "dscourse.scripts.allreduce_bench", ["--sizes", "1e4", "--ops", "all_reduce"],
                  timeout=8, out_dir=work / "wrong-master", wrong_master={1: "10.10.0.99"})
except LaunchError as e:
    print(str(e).splitlines()[0])
print(f"both nodes were killed at the deadline, not later: {time.time() - t0 < 40}")

# %% [markdown]
# ## 4. 预检：启动之前先查一遍
#
# `python -m dscourse.multinode preflight` 在 node 0 上逐项检查，每项一行：`ok`、`warn`，或 `FAIL` 加 `-> fix:` 修法。
# 所有子进程都有超时，所有主机并行探测，SSH 用 `-o BatchMode=yes -o ConnectTimeout=N`（不会停在输入密码或确认主机指纹的提示上），
# 所以它在大约 `ConnectTimeout + 10` 秒内一定结束。退出码 0 表示全部通过，1 表示有检查失败，2 表示参数错误或 hostfile 读不了。

# %%
import subprocess
import sys

PY = sys.executable
r = subprocess.run([PY, "-m", "dscourse.multinode", "preflight", "--help"], capture_output=True, text=True, timeout=60)
print(r.stdout)

# %% [markdown]
# 这台机器上没有 SSH 服务器。为了演示完整的一遍，我们用 `dscourse.multinode.fakessh` 代替 `ssh`：它接受 ssh 的命令行，
# 对“好”主机在本机执行远端命令（与 sshd 一样交给 `sh -c`），对“坏”主机原样打印 OpenSSH 在那种情况下的报错并以 255 退出，
# 对“黑洞”主机永不应答。预检本身的代码与面对真 ssh 时完全相同。先是一个好的两节点配置：

# %%
import os
import time

from dscourse.launch import free_port

hostfile = work / "hostfile"
hostfile.write_text("node0 slots=1\nnode1 slots=1\n")


def preflight(hosts: dict, *args, hostfile=hostfile, timeout=120):
    """Run the preflight CLI with the ssh stand-in; return (exit code, lines, seconds)."""
    env = {**os.environ, "DSCOURSE_FAKESSH": json.dumps(hosts)}
    t0 = time.time()
    r = subprocess.run([PY, "-m", "dscourse.multinode", "preflight", "--hostfile", str(hostfile),
                        "--ssh-command", f"{PY} -m dscourse.multinode.fakessh", *args],
                       capture_output=True, text=True, timeout=timeout, env=env, cwd=work)
    return r.returncode, r.stdout.splitlines(), time.time() - t0


good = {"node0": {"run": "", "address": "10.10.0.1"}, "node1": {"run": "", "address": "10.10.0.2"}}
port = free_port()
code, lines, took = preflight(good, "--launcher", "nossh", "--check-ssh", "--master-port", str(port))
for line in lines:
    print(line[:28].rstrip())  # status and check; the details (versions, port) are printed below
print(f"exit code {code}")
assert code == 0

# %%
# NBVAL_IGNORE_OUTPUT
# (versions and the port differ between machines)
print("\n".join(lines))

# %% [markdown]
# 再看坏的配置：一个没配免密 SSH 的主机、一个主机指纹未知的主机、一个解析不了的名字、一个永不应答的主机，外加一个写成 127.0.0.1 的 master 地址。
# 黑洞主机在 `ConnectTimeout`（这里 1 秒）加远端命令时限（这里 4 秒，默认 10 秒）之后被杀掉，整个预检仍在限时内结束：

# %%
broken = {**good, "worker-2": "deny", "worker-3": "hostkey", "worker-4": "hang"}
hostfile_broken = work / "hostfile.broken"
hostfile_broken.write_text("node0 slots=1\nnode1 slots=1\nworker-2 slots=1\nworker-3 slots=1\nworker-4 slots=1\n"
                           "no-such-node slots=1\n")
code, lines, took = preflight(broken, "--launcher", "nossh", "--check-ssh", "--ssh-timeout", "1", "--probe-timeout", "4",
                              "--master-addr", "127.0.0.1", "--master-port", str(port), hostfile=hostfile_broken)
for line in lines:
    if not line.startswith("ok"):
        print(line.replace(str(port), "<port>"))
print(f"exit code {code}; finished within the time limit: {took < 60}")
assert code == 1 and took < 60

# %% [markdown]
# 没有被 fakessh 认识的 `no-such-node` 走的是真实的名字解析。下面两格用**真正的 ssh 客户端**：对本机 127.0.0.1（这里没有 sshd）和一个
# `.invalid` 域名各试一次，以及 DeepSpeed 默认启动器需要的 pdsh 是否安装。输出取决于机器（有没有 sshd、有没有 pdsh），不参与比较：

# %%
# NBVAL_IGNORE_OUTPUT
# (depends on whether this machine runs sshd and has pdsh)
real_hf = work / "hostfile.real"
real_hf.write_text("127.0.0.1 slots=1\nworker.invalid slots=1\n")
r = subprocess.run([PY, "-m", "dscourse.multinode", "preflight", "--hostfile", str(real_hf), "--ssh-timeout", "3",
                    "--master-addr", "10.0.0.1"], capture_output=True, text=True, timeout=120, cwd=work)
print(r.stdout, f"exit code {r.returncode}", sep="")

# %% [markdown]
# ## 5. 通信量：每步要传多少字节，要多久
#
# ZeRO 论文第 7 节（Rajbhandari et al., *ZeRO: Memory Optimizations Toward Training Trillion Parameter Models*, 2020）逐项分析了通信量：
#
# - **数据并行（ZeRO-0）**：每步对梯度做一次 all-reduce。ring all-reduce 等于一次 reduce-scatter 加一次 all-gather，
#   每个 rank 各收发 $\Psi\cdot\frac{N-1}{N}$ 个元素，合计 **2Ψ**。
# - **ZeRO-1、ZeRO-2**：梯度 reduce-scatter（Ψ）+ 更新后的参数 all-gather（Ψ），同样是 **2Ψ**。
# - **ZeRO-3**：前向前 all-gather 参数（Ψ）、反向前再 all-gather 一次（Ψ）、梯度 reduce-scatter（Ψ），共 **3Ψ**。
#
# 这是论文的账。DeepSpeed 0.19.8 默认发出的集合通信并不是这样，它自己的 comms logger 就能证明：在配置里写
# `"comms_logger": {"enabled": true, "prof_all": true}`，`deepspeed.comm` 的每个集合通信都会把消息大小记进
# `deepspeed.comm.comms_logger.comms_dict`（`{记录名: {msg_size: [次数, 延迟, algbw, busbw]}}`）。msg_size 是**输入张量**的字节数
# （`deepspeed/comm/utils.py` 的 `get_msg_size_from_args`）：all-reduce、reduce、reduce-scatter 记完整张量，all-gather 记本 rank 的那一片。
#
# `dscourse.scripts.comm_volume` 在同一组进程里依次构建许多个真实的引擎（gloo、bf16、`gpt2-tiny`，134,912 个参数），每个先热身两个
# micro-batch、清空 logger、再量一个优化器步。先在这里真跑一次，两个配置、2 个 rank，与 `dscourse.comm` 的模型逐字节比较：

# %%
from dscourse import comm
from dscourse.launch import run_ranks

measured = comm.load_measured()
again = [r for r in measured["runs"] if r["world_size"] == 2 and r["name"] in ("z2-ga1", "z3-p0-ga1")]
res = run_ranks("dscourse.scripts.comm_volume",
                ["--configs", json.dumps([{k: r[k] for k in ("name", "stage", "grad_accum", "zero", "shape")}
                                          for r in again])], nproc=2, timeout=600, out_dir=work / "comm")
rows = []
for run, got in zip(again, res.ranks[0]["results"]):
    logged, model = comm.logger_totals(got["logged"]), comm.model_for_run(run, measured["shapes"])["logged_bytes"]
    for op in comm.LOGGED_OPS:
        if logged[op] or model[op]:
            rows.append([run["name"], op, logged[op], int(model[op]), "yes" if logged[op] == model[op] else "NO"])
print(text_table(["configuration", "collective", "comms logger (bytes)", "dscourse.comm", "equal"], rows))
assert all(r[-1] == "yes" for r in rows)

# %% [markdown]
# ZeRO-2 一步记下的是一次 **all-reduce**，大小是全部 bf16 梯度（134,912 × 2 = 269,824 字节，另有 1 字节的溢出标志和 4 字节的梯度范数），
# 再加一次更新后参数分片的 all-gather；ZeRO-3 的参数只 all-gather 了**一次**。完整的表（2 和 4 个 rank、ZeRO-0/1/2/3、梯度累积 1 和 2、
# 各个开关，共 {glue}`comm_table_runs` 个配置）由 `benchmarks/comm_volume_cpu.py` 测出，存在 `dscourse/data/cpu_comm_volume.json`，
# 测试逐个配置核对模型。下面是 4 个 rank 上的一部分（字节数是 logger 记的 msg_size × 次数；“倍数”是每个 rank 实际收发的字节，
# 以 $\Psi\cdot 2\,\text{字节}\cdot\frac{N-1}{N}$ 为单位，即论文的 2Ψ/3Ψ 记法）：

# %%
shown = ["z0-ga1", "z1-ga1", "z2-ga1", "z2-ga2", "z2-no-multi-rank", "z2-no-reduce-scatter", "z3-p0-ga1",
         "z3-p0-ga2", "z3-p0-reuse0-no-prefetch", "z3-ga1", "z3-p0-hpz2-ga2", "z3-p0-no-reduce-scatter"]
by_name = {r["name"]: r for r in comm.measured_vs_model(measured) if r["world_size"] == 4}
runs4 = {r["name"]: r for r in measured["runs"] if r["world_size"] == 4}
rows = []
for name in shown:
    row, run = by_name[name], runs4[name]
    unit = sum(measured["shapes"][run["shape"]]["param_numels"]) * 2 * 3 / 4
    paper = comm.model_for_run(run, measured["shapes"])["paper_wire_bytes_per_rank"] / unit
    wire = comm.model_for_run(run, measured["shapes"])["wire_bytes_per_rank"] / unit
    rows.append([name, *(row["logged"][op] for op in comm.LOGGED_OPS), f"{row['error']:.1%}", f"{wire:.2f}",
                 f"{paper:g}"])
print("gpt2-tiny, 4 CPU ranks, bf16: bytes the comms logger recorded in one optimizer step")
print(text_table(["configuration", "all_reduce", "all_gather", "reduce_scatter", "reduce", "model error", "multiple",
                  "paper"], rows))
errors = [r["error"] for r in comm.measured_vs_model(measured)]
print(f"\nall {len(errors)} configurations: the model is exact in {sum(e == 0 for e in errors)}, "
      f"the largest error is {max(errors):.1%}")
refused = sorted({k for r in measured["runs"] if "error" in r for k in r["zero"] if k in comm.CPU_UNSUPPORTED})
print("could not run on CPU ranks:", ", ".join(refused))

from dscourse.book import glue

glue("comm_table_runs", str(len(errors) + sum("error" in r for r in measured["runs"])))

# %%
from dscourse.plots import comm_figure, comm_measured_figure, show

show(comm_measured_figure(4))

# %% [markdown]
# 表里每一行背后的源码（DeepSpeed 0.19.8，`dscourse.comm.deepspeed_collectives` 给每个集合通信标了出处）：
#
# - **ZeRO-1/2 为什么 all-reduce**：`reduce_scatter: true`（默认）时，`stage_1_and_2.py` 的 `average_tensor` 把梯度桶按分区切片，
#   但在第 1695 行 `if self.use_multi_rank_bucket_allreduce or ...` 时把所有切片放进同一个 “allreduce” 桶，由 `allreduce_and_scatter`
#   → `allreduce_bucket` 做 `dist.all_reduce`（第 2384 行），每个 rank 再只拷走自己那一片。`use_multi_rank_bucket_allreduce` 默认为
#   `true`（`runtime/zero/config.py`）。于是每个 rank 收发 $2\Psi\frac{N-1}{N}$ 的梯度，加上 all-gather 的 $\Psi\frac{N-1}{N}$，共 **3Ψ**：
#   是数据并行的 1.5 倍，而不是“与数据并行相同”。
# - **`use_multi_rank_bucket_allreduce: false`**：每个切片改为 `dist.reduce` 到拥有它的 rank（`allreduce_no_retain(rank=dst)`，第 2387 行），
#   logger 记成 `reduce`。所有切片的 reduce 合起来每个 rank 发出 $\Psi\frac{N-1}{N}$，与 reduce-scatter 相同：回到论文的 **2Ψ**。
# - **`reduce_scatter: false`** 走 `gradient_reduction_w_predivide`（第 1618、1509 行），也是整桶 all-reduce：字节与默认完全相同。
# - `reduce_bucket_size`、`allgather_bucket_size`、`overlap_comm` 只改变调用次数或所在的流，**一个字节也不变**：
#   torch 有 `all_gather_into_tensor` 时，`runtime/utils.py` 的 `all_gather_dp_groups`（第 1021 行）每组一次收集，根本不看 `allgather_bucket_size`。
# - **梯度累积**：ZeRO-0/1 只在累积边界上归约一次；ZeRO-2 每个 micro-batch 都 all-reduce 一次（`engine.py` 的 `allreduce_gradients`，
#   第 3085 行：“ZeRO stage >= 2 communicates during non gradient accumulation boundaries as well”）；ZeRO-3 每个 micro-batch 都收集参数、
#   reduce-scatter 梯度。参数的 all-gather（ZeRO-1/2）每步只有一次。
# - **ZeRO-3 收集一次还是两次**：参数协调器在一个模块前向结束后释放它的参数，除非它下一次被用到的位置在 trace 里相距不到
#   `stage3_max_reuse_distance` 个元素，或者预取器已经为那次使用取过它（`partitioned_param_coordinator.py` 的 `__params_to_release`）。
#   小模型整个前向加反向都落在默认的 10⁹ 个元素之内（或者落在 `stage3_prefetch_bucket_size` 的预取窗口内），参数从前向一直留到反向：
#   **每个 micro-batch 只收集一次**，每步是 2Ψ 而不是 3Ψ。把 `stage3_max_reuse_distance` 设为 0 **并且**关掉预取（`stage3_prefetch_bucket_size: 0`
#   或 `stage3_max_live_parameters` 很小），才会看到第二次收集；`gpt2-tiny` 的词嵌入与 LM head 共享权重，被两个模块各用一次，于是它在前向和反向里各被收集两次
#   （表中 3.49 而不是 3）。不超过 `stage3_param_persistence_threshold`（默认 10⁵）个元素的参数整份常驻，只在优化器步之后收集一次
#   （`stage3.py` 的 `_post_step`）：`gpt2-tiny` 的参数全都不超过 10⁵，所以 `z3-ga1` 那一行的 all-gather 是步后的那一次。
# - **ZeRO++ `zero_hpz_partition_size`**：一步里的第一次收集从全部 N 个 rank 的主分片取，同时在节点内（这里 2 个 rank）留一份二级分片；
#   同一步里之后的收集（下一个 micro-batch、反向的第二次）都只在节点内进行，logger 记的分片因此大一倍，但不跨节点。
# - `zero_quantized_weights`、`zero_quantized_gradients` 在 CPU rank 上跑不起来：它们要量化 kernel，`deepspeed/ops/op_builder/cpu/no_impl.py` 报
#   “This op had not been implemented on CPU backend”（分别在 `zero.Init` 和第一次反向的 `all_to_all_quant_reduce` 里）。
#
# 大模型的 ZeRO-3 处在两者之间：默认的 10⁹ 个元素只够留住最后一段模块。把 Llama-2-7B 的每个宽度除以 64（每个模块的元素少 4096 倍），
# 阈值也除以 4096，实测第二次收集了非常驻参数的 {glue}`comm_7b_scaled_regathered`；`dscourse.comm.zero3_regathered` 的规则
# （除最后 `stage3_max_reuse_distance` 个元素外全部重新收集）与实测相差 {glue}`comm_7b_scaled_error`。
#
# 于是 7B 模型在 bf16 下，每个 rank 每步收发的字节（`dscourse.comm` 是本课程计算通信量的唯一位置，论文的计数在括号里）：

# %%
scaled = next(r for r in comm.measured_vs_model(measured) if r["name"] == "z3-llama7b-scaled" and r["world_size"] == 2)
run7 = next(r for r in measured["runs"] if r["name"] == "z3-llama7b-scaled" and r["world_size"] == 2)
numels7 = measured["shapes"]["llama2-7b-scaled"]["param_numels"]
nonpersistent = sum(numels7) - comm.persistent_elements(numels7, run7["zero"]["stage3_param_persistence_threshold"])
gathered = scaled["logged"]["all_gather"] * 2 / 2 - sum(numels7)  # elements gathered beyond one gather (N = 2, bf16)
glue("comm_7b_scaled_regathered", f"{gathered / nonpersistent:.0%}")
glue("comm_7b_scaled_error", f"{scaled['error']:.1%}")

psi = 7e9
for stage in range(4):
    report = comm.step_report(psi, stage, 64)
    ops = "; ".join(f"{c['op']} {c['what']}" + (f" x{c['times']}" if c["times"] > 1 else "")
                    for c in report["collectives"] if c["logged_bytes"] > 64)
    print(f"ZeRO-{stage}: {report['psi_multiple']:.2f} Psi per step (paper {comm.psi_multiple(stage):g})  ({ops})")
print()
rows = []
for n in (2, 8, 64, 1024):
    rows.append([n, *(f"{comm.format_volume(comm.step_volume_bytes(psi, s, n))} "
                      f"({comm.format_volume(comm.step_volume_bytes(psi, s, n, model='paper'))})" for s in range(4))])
print("7B parameters, bf16: bytes each rank sends per step, DeepSpeed 0.19.8 defaults (the paper)")
print(text_table(["GPUs (N)", "ZeRO-0", "ZeRO-1", "ZeRO-2", "ZeRO-3"], rows))
print("\nwith gradient accumulation 8 (ZeRO-2 and ZeRO-3 communicate every micro-batch):")
print(text_table(["GPUs (N)", *(f"ZeRO-{s}" for s in range(4))],
                 [[64, *(comm.format_volume(comm.step_volume_bytes(psi, s, 64, 2, grad_accum=8)) for s in range(4))]]))
print("\nZeRO-2 with use_multi_rank_bucket_allreduce false, 64 GPUs:",
      comm.format_volume(comm.step_volume_bytes(psi, 2, 64, zero={"use_multi_rank_bucket_allreduce": False})))

glue("comm_7b_dp", comm.format_volume(comm.step_volume_bytes(psi, 0, 64, 2)))
glue("comm_7b_z2", comm.format_volume(comm.step_volume_bytes(psi, 2, 64, 2)))
glue("comm_7b_z2_paper", comm.format_volume(comm.step_volume_bytes(psi, 2, 64, 2, model="paper")))
glue("comm_7b_z3", comm.format_volume(comm.step_volume_bytes(psi, 3, 64, 2)))
glue("comm_7b_z3_paper", comm.format_volume(comm.step_volume_bytes(psi, 3, 64, 2, model="paper")))
glue("comm_7b_z2_ga8", comm.format_volume(comm.step_volume_bytes(psi, 2, 64, 2, grad_accum=8)))
glue("comm_7b_z3_ga8", comm.format_volume(comm.step_volume_bytes(psi, 3, 64, 2, grad_accum=8)))

# %% [markdown]
# ### 换算成时间：带宽的两种说法
#
# NVIDIA 的 nccl-tests（`doc/PERFORMANCE.md`）报告两种带宽：**算法带宽** algbw = S / t（S 是完整张量的字节数），
# **总线带宽** busbw = algbw × 2(N−1)/N（all-reduce）或 × (N−1)/N（all-gather、reduce-scatter）。busbw 是每个 rank 的链路实际承载的速率，
# 与 N 无关，可以直接和硬件的链路速率比较。于是一次集合通信的时间是 $t = S \cdot \text{factor} / \text{busbw}$。
# 下表用的是各种链路**标称的单向速率**（每块 GPU），字节是上面 DeepSpeed 实际发出的（“paper” 一列是论文的计数）；
# 实测 busbw 通常低一些，而且计算与通信的重叠（overlap）会藏起一部分时间：

# %%
header, rows = comm.table(psi, 64, dtype_bytes=2)
print("7B parameters, 64 GPUs, bf16: communication per optimizer step, no overlap with compute")
print(text_table(header, rows))
for name, bw in comm.BANDWIDTHS.items():
    print(f"  {name}: {bw / 1e9:g} GB/s per GPU, one direction")
glue("comm_7b_ib_dp", comm.format_seconds(comm.step_time(psi, 0, 64, comm.BANDWIDTHS[
    "InfiniBand NDR 400 Gb/s (1 NIC per GPU)"])))
glue("comm_7b_eth_dp", comm.format_seconds(comm.step_time(psi, 0, 64, comm.BANDWIDTHS[
    "Ethernet 100 Gb/s (shared by 8 GPUs)"])))
glue("comm_7b_nvlink_dp", comm.format_seconds(comm.step_time(psi, 0, 64, comm.BANDWIDTHS[
    "NVLink 4 (H100 SXM, 900 GB/s bidirectional)"])))
glue("comm_7b_ib_z2", comm.format_seconds(comm.step_time(psi, 2, 64, comm.BANDWIDTHS[
    "InfiniBand NDR 400 Gb/s (1 NIC per GPU)"])))
glue("comm_7b_eth_z2", comm.format_seconds(comm.step_time(psi, 2, 64, comm.BANDWIDTHS[
    "Ethernet 100 Gb/s (shared by 8 GPUs)"])))

# %% [markdown]
# 同一个 7B 模型，每步通信在 NVLink 上是几十毫秒，在每卡一块 400 Gb/s InfiniBand 网卡上是零点几秒，而 8 块 GPU 共用一块 100 Gb/s 以太网卡时要十几秒——
# 比一步计算还长得多。这就是多节点训练要 InfiniBand（或 RoCE）、要每块 GPU 一块网卡的原因。DeepSpeed 默认的 ZeRO-1/2 比数据并行再多一半
# （all-reduce 梯度 + all-gather 参数），7B 的 ZeRO-3 也接近论文的 3Ψ：把 `use_multi_rank_bucket_allreduce` 设为 `false`，ZeRO-1/2 才回到 2Ψ。
#
# ### 交互：通信量计算器

# %%
from dscourse.multinode.widget import CommCalculator

calculator = CommCalculator(params="7B", gpus=64)
calculator.widget

# %%
show(comm_figure(psi, 64, 2, name="comm-7b-64"))

# %% [markdown]
# ### 不需要内核的版本
#
# 上面的控件需要 Python 内核才能响应；下面这张图在网页版里也能交互：左上角的下拉菜单选模型，滑块选 GPU 总数。
# 每根柱子都已由同一个函数 `dscourse.comm.step_time`（DeepSpeed 0.19.8 默认发出的字节，bf16 参数与梯度，不与计算重叠）预先算好，存在图里。

# %%
from dscourse.plots import comm_explorer

show(comm_explorer(preset="Llama-2-7B", world_size=64))

# %% [markdown]
# ### 实测：这台机器上 CPU rank 之间的带宽
#
# `dscourse.scripts.allreduce_bench` 在 2 个 gloo rank 之间对不同大小的消息做 all-reduce、all-gather、reduce-scatter，取中位时间，
# 按上面的公式算 algbw 和 busbw（2 个 rank 时 all-reduce 的 busbw 等于 algbw）。数值取决于机器和负载，不参与比较：

# %%
# NBVAL_IGNORE_OUTPUT
# (bandwidth depends on the machine and its load)
bench = run_ranks("dscourse.scripts.allreduce_bench", ["--sizes", "1e3,1e4,1e5,1e6,1e7", "--iters", "8"], nproc=2,
                  timeout=600, out_dir=work / "bench")
results = bench.ranks[0]["results"]
ops = list(dict.fromkeys(e["op"] for e in results))
by_size = {}  # message size -> {collective: "bus bandwidth (time)"}
for e in results:
    by_size.setdefault(e["size_bytes"], {})[e["op"]] = (f"{e['busbw'] / 1e9:.3f} GB/s ({e['seconds'] * 1e3:.2f} ms)"
                                                        if "busbw" in e else e["error"])
print(text_table(["message", *(f"{op}: busbw (time)" for op in ops)],
                 [[comm.format_volume(size), *(row.get(op, "") for op in ops)] for size, row in by_size.items()]))
best = max(e["busbw"] for e in results if e["op"] == "all_reduce" and "busbw" in e)
print(f"\nat {best / 1e9:.2f} GB/s, a 7B ZeRO-2 step on 64 such ranks would spend "
      f"{comm.format_seconds(comm.step_time(psi, 2, 64, best))} communicating")

# %%
# NBVAL_IGNORE_OUTPUT
# (measured values)
import plotly.graph_objects as go

fig = go.Figure()
for op in comm.COLLECTIVES:
    pts = [e for e in results if e["op"] == op and "busbw" in e]
    fig.add_scatter(x=[e["size_bytes"] for e in pts], y=[round(e["busbw"] / 1e9, 4) for e in pts],
                    mode="lines+markers", name=op)
fig.update_layout(title="2 个 CPU rank 上的 gloo：总线带宽与消息大小", xaxis_type="log",
                  xaxis_title="消息大小（字节）", yaxis_title="busbw (GB/s)",
                  legend_orientation="h", legend_y=-0.25)
show(fig, "cpu-busbw", height=400)

# %%
small = min((e for e in results if e["op"] == "all_reduce" and "busbw" in e), key=lambda e: e["size_bytes"])
large = max((e for e in results if e["op"] == "all_reduce" and "busbw" in e), key=lambda e: e["size_bytes"])
ratio = large["busbw"] / small["busbw"]
print(f"all-reduce bus bandwidth grows with the message: {comm.format_volume(large['size_bytes'])} messages reach more "
      f"than 10x the bandwidth of {comm.format_volume(small['size_bytes'])} messages: {ratio > 10}")
assert ratio > 10

# %% [markdown]
# 小消息的时间几乎全是固定开销（延迟），带宽很低；消息越大越接近链路的极限。这就是 DeepSpeed 把梯度攒进桶（`reduce_bucket_size`、
# `allgather_bucket_size`）再通信的原因：桶太小，通信退化成一串高延迟的小消息。GPU 上用 NCCL 测同样的曲线，就能把实测 busbw 代入上面的计算器。
#
# ## 6. 经典故障：症状、诊断、修法
#
# | 故障 | 症状 | 诊断 | 修法 |
# |---|---|---|---|
# | 免密 SSH 没配好 | `deepspeed` 报 “...was not reachable via ssh”；pdsh 打印 `ssh exited with exit code 255` | `ssh -o BatchMode=yes worker-2 true; echo $?`（255 即失败），`ssh -v` 看原因；本节的 preflight | `ssh-keygen` + `ssh-copy-id`；第一次连接先接受主机指纹；或改用 `--no_ssh`/torchrun |
# | 没装 pdsh | `RuntimeError: launcher 'pdsh' not installed.` | `which pdsh` | 在 node 0 上安装 pdsh；或 `--launcher openmpi/slurm`、`--no_ssh` |
# | `--master_addr` 写错（127.0.0.1、docker0 地址、别的节点） | 其余节点一直等待（torchrun 的静态会合默认等 600 秒），没有任何报错 | `ss -ltn` 看 master 端口在哪个地址上监听；其他节点上 `nc -zv <master> <port>` | 用 node 0 在训练网络上的地址（`hostname -I` 里那个，而不是第一个） |
# | 选错网卡 | 会合成功，第一个集合通信挂住或 `Connection refused`/超时 | `NCCL_DEBUG=INFO`（看 `NET/Socket : Using ...`）、`NCCL_DEBUG_SUBSYS=INIT,NET`；gloo 看报错里的 `remote=[地址]` | `NCCL_SOCKET_IFNAME=ib0`（或 `=eth0`、`^docker,lo`）、`GLOO_SOCKET_IFNAME=eth0`，并用 `.deepspeed_env` 或各节点命令传过去 |
# | 变量没到其他节点 | 只在 node 0 上生效的设置（如 `NCCL_IB_DISABLE=1`）在别的节点上无效，表现为只有跨节点的通信慢或挂 | 在训练脚本里打印 `os.environ` 中的相关变量，每个 rank 一行 | 写进 `.deepspeed_env`（每行 `NAME=value`，不要空行和注释）；`--no_ssh`/torchrun 在每个节点的命令里 export |
# | 各节点版本不同 | 第一个集合通信报错或挂住，报错指向张量形状或协议 | 本节 preflight 的版本检查；`python -c "import torch, deepspeed; print(torch.__version__, deepspeed.__version__)"` 在每个节点上 | 每个节点装同一个环境（同一路径：pdsh 用 node 0 的 `sys.executable`） |
#
# 诊断挂住时，`NCCL_DEBUG=INFO` 是第一步；`TORCH_DISTRIBUTED_DEBUG=DETAIL` 让 PyTorch 在集合通信不匹配时报出各 rank 的调用；
# `py-spy dump --pid <PID>` 看每个 rank 停在哪一行。给进程组设一个短超时（`deepspeed.init_distributed(timeout=timedelta(minutes=5))` 或 `DEEPSPEED_TIMEOUT=5`，默认 10 分钟），
# 挂住就会变成一条带位置的报错。
#
# ## 小结
#
# - hostfile 每行 `主机 slots=N`，rank 按文件顺序编号；DeepSpeed 对 `slots=8x` 这类写法静默接受，对空格和重复主机报错。
# - 默认的 `deepspeed` 启动器 = 在 node 0 上一条命令 + pdsh + 免密 SSH + 各节点同一路径的环境；不能 SSH 时每个节点各执行一条命令
#   （`--no_ssh --node_rank i`、torchrun、`accelerate launch --deepspeed_multinode_launcher standard`）。
# - 只有 pdsh/MPI/Slurm 路径转发环境变量，且只转发 `NCCL*`（GPU 上）、`PYTHON*`、`UCX*`、`MV2*`、`MLFLOW*` 和 `.deepspeed_env` 里的行。
# - 启动前跑一遍 preflight；挂住时先看 `--master_addr`、网卡（`NCCL_SOCKET_IFNAME`/`GLOO_SOCKET_IFNAME`）和 `NCCL_DEBUG=INFO`。
# - 论文说 ZeRO-1/2 与数据并行一样是 2Ψ、ZeRO-3 是 3Ψ；DeepSpeed 0.19.8 的 comms logger 显示，默认的 ZeRO-1/2 all-reduce 全部梯度再 all-gather 参数，
#   是 **3Ψ**（`use_multi_rank_bucket_allreduce: false` 才是 2Ψ）；小模型的 ZeRO-3 参数从前向留到反向，只收集一次（2Ψ），7B 这样的大模型大部分要收集两次。
#   梯度累积时 ZeRO-2/3 每个 micro-batch 都通信。跨节点时，带宽决定了这些字节要花多久。
