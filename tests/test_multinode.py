"""4.5 multi-node: hostfile parser (DeepSpeed's own parser as the oracle), command builder (the launchers' own
argument parsers as the oracle), preflight on good and broken setups (bounded time), communication formulas,
and real multi-"node" runs on this machine."""

import json
import os
import subprocess
import sys
import time
from collections import OrderedDict

import pytest

from dscourse import comm
from dscourse.multinode.commands import LAUNCHERS, build_plan
from dscourse.multinode.hostfile import HostfileError, lint_hostfile, parse_hostfile, ranks, resolve

PY = sys.executable
FAKESSH = f"{PY} -m dscourse.multinode.fakessh"

# --------------------------------------------------------------------------------------------- hostfile

HOSTFILES = [
    "worker-1 slots=8\nworker-2 slots=8\n",
    "# a comment\n\nworker-1 slots=4\n   worker-2 slots=2   \n",
    "worker-1 slots=8 # gpus\n",
    "worker-1 slots=8x\n",
    "worker-1\tslots=3\n",
    "worker-1 slots=0\nworker-2 slots=1\n",
    "10.0.0.1 slots=8\n10.0.0.2 slots=8\n",
    # refused
    "worker-1 slots = 8\n",
    "worker-1\n",
    "worker-1 slots=8\nworker-1 slots=8\n",
    "",
    "# only a comment\n",
    "slots=8\n",
    "worker-1 slot=8\n",
    "worker-1 slots=-1\n",
]


def _deepspeed_parse(text):
    from deepspeed.launcher.runner import _parse_hostfile

    return _parse_hostfile(text.splitlines(keepends=True))


@pytest.mark.parametrize("text", HOSTFILES)
def test_hostfile_parser_agrees_with_deepspeed(text):
    try:
        expected = _deepspeed_parse(text)
    except ValueError:
        with pytest.raises(HostfileError):
            parse_hostfile(text)
        return
    assert parse_hostfile(text) == expected


def test_hostfile_errors_are_one_line_and_say_what_to_write():
    with pytest.raises(HostfileError, match=r"line 1: 'worker-1 slots = 8' .*write e.g. 'worker-1 slots=8'") as e:
        parse_hostfile("worker-1 slots = 8\n")
    assert "\n" not in str(e.value)
    with pytest.raises(HostfileError, match="appears twice"):
        parse_hostfile("a slots=1\na slots=2\n")
    with pytest.raises(HostfileError, match="names no host"):
        parse_hostfile("# nothing\n")


def test_lint_flags_what_deepspeed_silently_accepts():
    found = [str(x) for x in lint_hostfile("a slots=0\nb slots=8x\nc slots=8 max_slots=8\nd slots=2 # ok\n")]
    assert any("slots=0" in f for f in found)
    assert any("slots=8x" in f for f in found)
    assert any("max_slots=8" in f for f in found)
    assert not any("line 4" in f for f in found)


POOL = OrderedDict([("worker-0", 4), ("worker-1", 4), ("worker-2", 2)])
FILTERS = [("", "", -1, -1), ("worker-1", "", -1, -1), ("worker-0@worker-1:0,2", "", -1, -1),
           ("worker-1:3,1@worker-0:0", "", -1, -1), ("", "worker-1", -1, -1), ("", "worker-1:0", -1, -1),
           ("", "worker-0:0,1,2,3", -1, -1), ("", "", 2, -1), ("", "", -1, 1), ("", "", 1, 2),
           # refused
           ("worker-9", "", -1, -1), ("worker-2:5", "", -1, -1), ("worker-1", "worker-2", -1, -1),
           ("worker-1", "", 2, -1), ("worker-1:x", "", -1, -1), ("worker-1:", "", -1, -1)]


def _deepspeed_resolve(include, exclude, num_nodes, num_gpus):
    from deepspeed.launcher.runner import apply_num_nodes_and_gpus, parse_inclusion_exclusion

    if (num_nodes >= 0 or num_gpus >= 0) and (include or exclude):
        raise ValueError("Cannot specify num_nodes/gpus with include/exclude")  # runner.main()
    active = parse_inclusion_exclusion(POOL, include, exclude)
    return apply_num_nodes_and_gpus(active, num_nodes, num_gpus)


@pytest.mark.parametrize("include, exclude, num_nodes, num_gpus", FILTERS)
def test_filters_agree_with_deepspeed(include, exclude, num_nodes, num_gpus):
    try:
        expected = _deepspeed_resolve(include, exclude, num_nodes, num_gpus)
    except ValueError:
        with pytest.raises(HostfileError):
            resolve(POOL, include, exclude, num_nodes, num_gpus)
        return
    assert dict(resolve(POOL, include, exclude, num_nodes, num_gpus)) == {k: list(v) for k, v in expected.items()}


def test_rank_order_follows_the_hostfile():
    active = resolve(POOL, include="worker-1:1,3@worker-0:2")
    assert ranks(active) == [(0, "worker-0", 0, 0), (1, "worker-1", 1, 0), (2, "worker-1", 1, 1)]


# --------------------------------------------------------------------------------------------- commands


def _parse_with_the_launcher(argv):
    """Run a built command line through the parser of the launcher it names; return the parsed namespace."""
    if argv[0] == "deepspeed":
        from deepspeed.launcher.runner import parse_args

        return parse_args(argv[1:])
    if argv[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        return get_args_parser().parse_args(argv[1:])
    if argv[:2] == ["accelerate", "launch"]:
        from accelerate.commands.launch import launch_command_parser

        return launch_command_parser().parse_args(argv[2:])
    raise AssertionError(argv)


@pytest.mark.parametrize("launcher", [k for k in LAUNCHERS if k != "slurm-sbatch"])
def test_every_command_parses_with_its_launcher(launcher):
    plan = build_plan(launcher, nodes=3, gpus_per_node=4, master_addr="10.0.0.1", master_port=29600,
                      script="train.py", script_args=["--deepspeed", "ds.json"])
    assert plan.ok, plan.problems
    assert len(plan.commands) == (3 if launcher in ("deepspeed-nossh", "torchrun", "torchrun-c10d", "accelerate")
                                  else 1)
    for i, c in enumerate(plan.commands):
        a = _parse_with_the_launcher(c.argv)
        if launcher.startswith("deepspeed"):
            assert a.hostfile == "hostfile" and a.master_addr == "10.0.0.1" and a.master_port == 29600
            assert a.user_script == "train.py" and a.user_args == ["--deepspeed", "ds.json"]
            if launcher == "deepspeed-nossh":
                assert a.no_ssh and a.node_rank == i
            elif launcher != "deepspeed":
                assert a.launcher == launcher.split("-")[1]
        elif launcher.startswith("torchrun"):
            assert a.nnodes == "3" and a.nproc_per_node == "4" and a.training_script == "train.py"
            if launcher == "torchrun":
                assert a.node_rank == i and a.master_addr == "10.0.0.1" and a.master_port == 29600
            else:
                assert a.rdzv_backend == "c10d" and a.rdzv_endpoint == "10.0.0.1:29600"
        else:
            assert (a.num_machines, a.num_processes, a.machine_rank) == (3, 12, i)
            assert a.main_process_ip == "10.0.0.1" and a.deepspeed_multinode_launcher == "standard"
    if launcher.startswith("deepspeed"):
        assert parse_hostfile(plan.files["hostfile"]) == {"worker-1": 4, "worker-2": 4, "worker-3": 4}


@pytest.mark.parametrize("launcher, include, exclude", [
    ("deepspeed", "worker-1@worker-3:0,2", ""), ("deepspeed", "", "worker-2:1,3"), ("deepspeed-nossh", "", "worker-2"),
    ("deepspeed-slurm", "worker-1@worker-2", "")])
def test_include_exclude_resolve_as_deepspeed_does(launcher, include, exclude):
    from deepspeed.launcher.runner import parse_inclusion_exclusion

    plan = build_plan(launcher, 3, 4, "10.0.0.1", include=include, exclude=exclude)
    assert plan.ok, plan.problems
    pool = parse_hostfile(plan.files["hostfile"])
    expected = parse_inclusion_exclusion(pool, include, exclude)
    assert dict(plan.active) == {h: list(s) for h, s in expected.items()}
    assert plan.world_size == sum(len(s) for s in expected.values())
    for i, c in enumerate(plan.commands):
        a = _parse_with_the_launcher(c.argv)
        assert (a.include, a.exclude) == (include, exclude)
        if launcher == "deepspeed-nossh":
            assert a.node_rank == i and c.where.endswith(f"({list(expected)[i]})")


@pytest.mark.parametrize("launcher, include, message", [
    ("deepspeed-openmpi", "worker-1", "refuses --include"), ("deepspeed-mvapich", "worker-1", "refuses --include"),
    ("deepspeed-slurm", "worker-1:1", "cannot pin"), ("deepspeed", "worker-9", "not in the hostfile"),
    ("deepspeed", "worker-1:7", "no slot 7"), ("torchrun", "worker-1", "deepspeed launcher flags")])
def test_filters_the_backend_refuses(launcher, include, message):
    plan = build_plan(launcher, 3, 4, "10.0.0.1", include=include)
    assert not plan.ok and any(message in str(p) for p in plan.problems) and plan.commands == []


def test_sbatch_script_uses_rendezvous_not_a_node_rank_expanded_once():
    plan = build_plan("slurm-sbatch", 4, 8, env={"NCCL_SOCKET_IFNAME": "ib0"})
    script = plan.files["job.sbatch"]
    assert "#SBATCH --nodes=4" in script and "#SBATCH --gpus-per-node=8" in script
    srun = [ln for ln in script.splitlines() if ln.startswith("srun ")][0]
    assert "--rdzv_backend c10d" in srun and "$SLURM_NODEID" not in srun
    assert "export NCCL_SOCKET_IFNAME=ib0" in script


def test_deepspeed_env_file_only_where_deepspeed_reads_it():
    env = {"NCCL_SOCKET_IFNAME": "eth1", "NCCL_DEBUG": "INFO"}
    assert build_plan("deepspeed", 2, 8, "10.0.0.1", env=env).files[".deepspeed_env"] == \
        "NCCL_SOCKET_IFNAME=eth1\nNCCL_DEBUG=INFO\n"
    nossh = build_plan("deepspeed-nossh", 2, 8, "10.0.0.1", env=env)
    assert ".deepspeed_env" not in nossh.files and nossh.commands[1].env == env


@pytest.mark.parametrize("kwargs, message", [
    ({"master_addr": "127.0.0.1"}, "loopback"),
    ({"master_addr": "localhost"}, "loopback"),
    ({"master_port": 70000}, "not a TCP port"),
    ({"hosts": ["a", "a"]}, "listed twice"),
    ({"hosts": ["a b", "c"]}, "characters"),
    ({"gpus_per_node": 0}, "at least 1"),
    ({"launcher": "mpirun"}, "unknown launcher"),
    ({"launcher": "torchrun", "master_addr": ""}, "no master address"),
])
def test_builder_refuses_broken_setups(kwargs, message):
    args = {"launcher": "deepspeed", "nodes": 2, "gpus_per_node": 8, "master_addr": "10.0.0.1", **kwargs}
    plan = build_plan(**args)
    assert not plan.ok and any(message in str(p) for p in plan.problems)
    assert plan.commands == []


def test_commands_cli(tmp_path):
    ok = subprocess.run([PY, "-m", "dscourse.multinode", "commands", "--launcher", "torchrun", "--nodes", "2",
                         "--gpus", "4", "--master-addr", "10.0.0.1", "train.py", "--deepspeed", "ds.json"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "--node_rank 1" in ok.stdout and "train.py --deepspeed ds.json" in ok.stdout
    bad = subprocess.run([PY, "-m", "dscourse.multinode", "commands", "--nodes", "2", "--gpus", "4",
                          "--master-addr", "127.0.0.1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "# ERROR: master address 127.0.0.1" in bad.stdout


def test_launch_command_builder_widget():
    from dscourse.multinode.widget import LaunchCommandBuilder

    b = LaunchCommandBuilder()
    assert b.plan.ok and "deepspeed --hostfile hostfile" in b.output.value
    plan = b.set(launcher="torchrun", nodes=4, gpus_per_node=2)
    assert len(plan.commands) == 4 and "--node_rank 3" in b.output.value
    b.set(master_addr="127.0.0.1")
    assert not b.plan.ok and "loopback" in b.report.value and b.output.value == ""
    b.set(master_addr="10.0.0.1", launcher="deepspeed", nodes=2, include="worker-2:0")
    assert b.plan.ok and b.plan.world_size == 1 and "--include worker-2:0" in b.output.value
    b.set(include="", launcher="torchrun")
    b.set(master_addr="10.0.0.1", script='train.py "unclosed')
    assert b.plan is None and "无法解析" in b.report.value


# --------------------------------------------------------------------------------------------- preflight


def _preflight(args, env=None, timeout=90, cwd=None):
    t0 = time.time()
    r = subprocess.run([PY, "-m", "dscourse.multinode", "preflight", *args], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd)
    return r, time.time() - t0


def _fake(hosts: dict) -> dict:
    return {"DSCOURSE_FAKESSH": json.dumps(hosts)}


def test_preflight_good_setup_passes(tmp_path):
    (tmp_path / "hostfile").write_text("node0 slots=1\nnode1 slots=1\n")
    r, took = _preflight(["--hostfile", str(tmp_path / "hostfile"), "--launcher", "nossh", "--check-ssh",
                          "--ssh-command", FAKESSH, "--master-addr", "node0"],
                         _fake({"node0": {"run": "", "address": "10.10.0.1"}, "node1": {"run": "", "address": "10.10.0.2"}}),
                         cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all checks passed" in r.stdout and "deepspeed version" in r.stdout and "Traceback" not in r.stderr
    assert took < 60


@pytest.mark.parametrize("host, fragment", [
    ("deny", "Permission denied"), ("refuse", "Connection refused"), ("hostkey", "Host key verification failed")])
def test_preflight_ssh_failures_are_explained(tmp_path, host, fragment):
    (tmp_path / "hostfile").write_text("node0 slots=1\nworker-x slots=1\n")
    r, took = _preflight(["--hostfile", str(tmp_path / "hostfile"), "--launcher", "nossh", "--check-ssh",
                          "--ssh-command", FAKESSH, "--master-addr", "10.9.9.9"],
                         _fake({"node0": "", "worker-x": host}), cwd=tmp_path)
    assert r.returncode == 1
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL  ssh worker-x")][0]
    assert "exit 255" in line and fragment in line and "-> fix:" in line
    assert took < 60


def test_preflight_never_hangs_on_a_silent_host(tmp_path):
    (tmp_path / "hostfile").write_text("node0 slots=1\nblackhole slots=1\n")
    r, took = _preflight(["--hostfile", str(tmp_path / "hostfile"), "--launcher", "nossh", "--check-ssh",
                          "--ssh-command", FAKESSH, "--ssh-timeout", "2", "--probe-timeout", "3",
                          "--master-addr", "10.9.9.9"],
                         _fake({"node0": "", "blackhole": "hang"}), cwd=tmp_path)
    assert r.returncode == 1 and "FAIL  ssh blackhole" in r.stdout and "no answer in 5 s" in r.stdout
    assert took < 45


def test_preflight_catches_version_mismatch(tmp_path):
    (tmp_path / "hostfile").write_text("node0 slots=1\nold slots=1\n")
    old = 'probe:{"python": "3.10.0", "torch": "2.1.0", "deepspeed": "0.14.0", "port_free": true}'
    r, _ = _preflight(["--hostfile", str(tmp_path / "hostfile"), "--launcher", "nossh", "--check-ssh",
                       "--ssh-command", FAKESSH, "--master-addr", "10.9.9.9"], _fake({"node0": "", "old": old}),
                      cwd=tmp_path)
    assert r.returncode == 1
    assert "FAIL  deepspeed version" in r.stdout and "old: 0.14.0" in r.stdout and "pip install deepspeed==" in r.stdout


def test_preflight_bad_hostfile_unresolvable_name_loopback_master(tmp_path):
    (tmp_path / "bad").write_text("worker-1 slots = 8\n")
    r, took = _preflight(["--hostfile", str(tmp_path / "bad")], cwd=tmp_path)
    assert r.returncode == 1 and "FAIL  hostfile" in r.stdout and "write e.g. 'worker-1 slots=8'" in r.stdout
    (tmp_path / "hf").write_text("localhost slots=1\nno-such-host.invalid slots=1\n")
    r, took = _preflight(["--hostfile", str(tmp_path / "hf"), "--launcher", "torchrun"], cwd=tmp_path)
    assert r.returncode == 1 and "FAIL  resolve no-such-host.invalid" in r.stdout
    assert "FAIL  master address" in r.stdout and "loopback" in r.stdout
    assert took < 60


def test_preflight_pdsh_missing(tmp_path):
    import shutil

    if shutil.which("pdsh"):
        pytest.skip("pdsh is installed here")
    r, _ = _preflight(["--hosts", "localhost", "--ssh-command", FAKESSH], _fake({"localhost": ""}), cwd=tmp_path)
    assert r.returncode == 1 and "FAIL  launcher" in r.stdout and "apt-get install pdsh" in r.stdout


def test_preflight_master_port_in_use(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        r, _ = _preflight(["--hosts", "localhost", "--launcher", "nossh", "--master-port", str(port)], cwd=tmp_path)
    finally:
        s.close()
    assert r.returncode == 1 and f"{port} is already in use" in r.stdout


def test_preflight_deepspeed_env_file(tmp_path):
    (tmp_path / ".deepspeed_env").write_text("NCCL_DEBUG=INFO\n# comment\n\n")
    r, _ = _preflight(["--hosts", "localhost", "--ssh-command", FAKESSH, "--no-versions"], _fake({"localhost": ""}),
                      cwd=tmp_path)
    line = [ln for ln in r.stdout.splitlines() if ".deepspeed_env" in ln][0]
    assert line.startswith("FAIL") and "line 2 is a comment" in line and "line 3 is blank" in line


@pytest.mark.parametrize("args", [["--hostfile", "/no/such/file"], ["--hosts", ","], [],
                                  ["--hosts", "a", "--ssh-timeout", "0"], ["--hosts", "a", "--master-port", "x"]])
def test_preflight_bad_arguments_exit_2_in_one_line(args):
    r, _ = _preflight(args)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------- communication


def test_paper_volume_is_2psi_for_dp_zero1_zero2_and_3psi_for_zero3():
    psi = 1e9
    for stage, multiple in ((0, 2), (1, 2), (2, 2), (3, 3)):
        assert comm.psi_multiple(stage) == multiple
        # large N: per-rank bytes approach multiple * Ψ * dtype bytes
        assert comm.step_volume_bytes(psi, stage, 10**6, 2, model="paper") == pytest.approx(multiple * psi * 2,
                                                                                              rel=1e-5)
        # exact ring volume: (N-1)/N of it
        assert comm.step_volume_bytes(psi, stage, 8, 2, model="paper") == pytest.approx(multiple * psi * 2 * 7 / 8)


def test_deepspeed_volume_is_3psi_for_zero1_zero2_and_2psi_for_a_zero3_model_that_fits():
    psi, n = 1e8, 8  # 1e8: ZeRO-3's whole trace fits the default reuse distance, one gather per micro-batch
    for stage, multiple in ((0, 2), (1, 3), (2, 3), (3, 2)):
        assert comm.step_volume_bytes(psi, stage, n, 2) == pytest.approx(multiple * psi * 2 * 7 / 8, rel=1e-7)


def test_gradient_accumulation_only_multiplies_what_deepspeed_sends_every_micro_batch():
    psi, n = 1e8, 8
    one = comm.step_volume_bytes(psi, 0, n, model="paper")
    for model in ("paper", "deepspeed"):
        assert comm.step_volume_bytes(psi, 0, n, grad_accum=4, model=model) == one
    assert comm.step_volume_bytes(psi, 1, n, grad_accum=4, model="paper") == one
    assert comm.step_volume_bytes(psi, 2, n, grad_accum=4, model="paper") == pytest.approx(one / 2 * 5)  # 4 RS + 1 AG
    assert comm.step_volume_bytes(psi, 3, n, grad_accum=4, model="paper") == pytest.approx(one / 2 * 12)
    # DeepSpeed: ZeRO-1 all-reduces once, ZeRO-2 every micro-batch (an all-reduce: 2 units each), one all-gather
    assert comm.step_volume_bytes(psi, 1, n, grad_accum=4) == pytest.approx(one / 2 * 3, rel=1e-7)
    assert comm.step_volume_bytes(psi, 2, n, grad_accum=4) == pytest.approx(one / 2 * 9, rel=1e-7)
    assert comm.step_volume_bytes(psi, 3, n, grad_accum=4) == pytest.approx(one / 2 * 8, rel=1e-7)  # 4 AG + 4 RS


def test_bus_bandwidth_conventions_match_nccl_tests():
    assert comm.bus_factor("all_reduce", 8) == pytest.approx(2 * 7 / 8)
    assert comm.bus_factor("all_gather", 8) == pytest.approx(7 / 8)
    assert comm.bus_factor("reduce_scatter", 2) == pytest.approx(0.5)
    algbw, busbw = comm.bus_bandwidth("all_reduce", 1e9, 0.01, 4)
    assert algbw == pytest.approx(1e11) and busbw == pytest.approx(1.5e11)
    # time at bus bandwidth B recovers the time the bandwidth was measured from
    assert comm.ring_allreduce_time(1e9, 4, busbw) == pytest.approx(0.01)
    assert comm.step_time(1e9, 0, 4, busbw, dtype_bytes=1) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        comm.bus_factor("broadcast", 2)
    with pytest.raises(ValueError):
        comm.step_volume_bytes(1e9, 4, 8)


def test_comm_cli():
    r = subprocess.run([PY, "-m", "dscourse.comm", "--params", "7B", "--gpus", "16"], capture_output=True, text=True,
                       timeout=60)
    zero2 = [ln for ln in r.stdout.splitlines() if ln.startswith("ZeRO-2")][0].split()
    assert r.returncode == 0 and zero2[1:5] == ["39.4", "GB", "26.2", "GB"]  # DeepSpeed's, the paper's
    r = subprocess.run([PY, "-m", "dscourse.comm", "--params", "7B", "--gpus", "0"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_comm_calculator_widget():
    from dscourse.multinode.widget import CommCalculator

    c = CommCalculator(params="7B", gpus=16)
    assert c.rows[0][1] == "26.2 GB" and c.rows[1][1] == "39.4 GB" and c.rows[3][1] == "37.5 GB"
    assert c.set(params="nonsense") is None and "not a parameter count" in c.table.value


# --------------------------------------------------------------------------------------------- real runs


@pytest.mark.parametrize("argv", [["dscourse.scripts.allreduce_bench"], ["dscourse.multinode.fakessh"],
                                  ["dscourse.multinode"], ["dscourse.multinode", "preflight"],
                                  ["dscourse.multinode", "commands"], ["dscourse.comm"]])
def test_scripts_have_help(argv):
    r = subprocess.run([PY, "-m", *argv, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and ("usage" in r.stdout.lower() or "stand-in" in r.stdout), r.stdout + r.stderr


@pytest.mark.engine
def test_allreduce_bench_on_two_ranks(tmp_path):
    from dscourse.launch import run_ranks

    res = run_ranks("dscourse.scripts.allreduce_bench", ["--sizes", "1e4,1e6", "--iters", "3"], nproc=2,
                    timeout=600, out_dir=tmp_path)
    rank0 = res.ranks[0]
    assert rank0["world_size"] == 2 and rank0["backend"] == "gloo"
    done = [e for e in rank0["results"] if "busbw" in e]
    assert {e["op"] for e in done} >= {"all_reduce"} and all(e["busbw"] > 0 for e in done)
    ar = [e for e in done if e["op"] == "all_reduce"][0]
    assert ar["busbw"] == pytest.approx(ar["algbw"])  # 2(N-1)/N = 1 on 2 ranks


@pytest.fixture(scope="module")
def zero2_config(tmp_path_factory):
    from dscourse.config import build_config

    path = tmp_path_factory.mktemp("cfg") / "ds.json"
    path.write_text(json.dumps(build_config(2, micro_batch=2, world_size=2)))
    return path


@pytest.mark.engine
@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed-nossh"])
def test_two_nodes_train_zero2_together(launcher, zero2_config, tmp_path):
    from dscourse.multinode.simulate import run_nodes_job

    # as notebook 05 runs it (so one run serves both in a test session)
    job = run_nodes_job(launcher, "dscourse.scripts.train_step", ["--config", str(zero2_config), "--steps", "3"],
                        timeout=600, out_dir=tmp_path)
    assert job.cluster.mode in ("netns", "loopback")
    assert len(job.plan.commands) == 2
    assert sorted(r["rank"] for r in job.result.ranks) == [0, 1]
    for r in job.result.ranks:
        assert r["world_size"] == 2 and r["zero_stage"] == 2 and len(r["losses"]) == 3
    assert job.result.ranks[0]["losses"] != job.result.ranks[1]["losses"]  # each node trained on its own data


@pytest.mark.engine
def test_two_nodes_have_their_own_addresses_when_namespaces_work(tmp_path):
    from dscourse.multinode import netns
    from dscourse.multinode.simulate import run_nodes_job

    job = run_nodes_job("torchrun", "dscourse.scripts.allreduce_bench", ["--sizes", "1e5", "--iters", "2",
                                                                         "--ops", "all_reduce"],
                        timeout=600, out_dir=tmp_path)
    seen = [r["addresses"] for r in sorted(job.result.ranks, key=lambda r: r["rank"])]
    if job.cluster.mode == "netns":
        assert seen == [[f"{netns.SUBNET}.1"], [f"{netns.SUBNET}.2"]]
    else:
        assert job.cluster.reason  # why the namespaces were not used (not root, no ip, setup failed, ...)


@pytest.mark.engine
def test_loopback_fallback_and_a_failing_node_is_reported_fast(tmp_path):
    from dscourse.launch import LaunchError
    from dscourse.multinode.simulate import run_nodes_job

    t0 = time.time()
    with pytest.raises(LaunchError, match="nodes failed"):
        run_nodes_job("torchrun", "dscourse.scripts.allreduce_bench", ["--sizes", "nonsense"], timeout=600,
                      out_dir=tmp_path, use_netns=False)
    assert time.time() - t0 < 120


def test_run_nodes_kills_everything_at_its_timeout(tmp_path):
    from dscourse.launch import LaunchError, run_nodes

    t0 = time.time()
    with pytest.raises(LaunchError, match="did not finish in 3 s"):
        run_nodes([[PY, "-c", "import time; time.sleep(600)"]] * 2, tmp_path, world_size=2, timeout=3)
    assert time.time() - t0 < 30


def test_netns_can_be_switched_off(monkeypatch):
    from dscourse.multinode import netns

    monkeypatch.setenv("DSCOURSE_NETNS", "0")
    assert netns.available() == (False, "disabled by DSCOURSE_NETNS=0")
    with netns.nodes(2) as cluster:
        assert cluster.mode == "loopback" and cluster.addresses == ["127.0.0.1", "127.0.0.2"]
        assert cluster.prefix(1) == [] and cluster.ifname == "lo"
    with pytest.raises(OSError, match="unavailable"):
        with netns.nodes(2, use_netns=True):
            pass


def test_netns_nodes_are_removed_afterwards():
    from dscourse.multinode import netns

    ok, _ = netns.available()
    if not ok:
        pytest.skip("no network namespaces here")
    with netns.nodes(2) as cluster:
        names = list(cluster.namespaces)
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
        assert all(n in listed for n in names)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    assert not any(n in listed for n in names)
