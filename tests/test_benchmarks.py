"""The GPU benchmark scripts, smoke-run on CPU at the smallest scale so that they cannot rot unseen."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine  # real engines and ranks: not in the fast loop (-m "not engine")

REPO = Path(__file__).resolve().parents[1]


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_gpu_memory_benchmark_records_runs_with_provenance(tmp_path):
    out = tmp_path / "memory.json"
    done = _run("benchmarks/gpu_memory.py", "--shapes", "gpt2-tiny", "--variants", "1,3+oo+op", "--steps", "1",
                "--gpus", "2", "--out", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["provenance"]["deepspeed"] == "0.19.8" and data["provenance"]["script"] == "benchmarks/gpu_memory.py"
    assert [(r["stage"], r["offload_param"]) for r in data["runs"]] == [(1, "none"), (3, "cpu")]
    assert all(len(r["ranks"]) == 2 for r in data["runs"])


def test_precision_benchmark_dry_run(tmp_path):
    out = tmp_path / "precision.json"
    done = _run("benchmarks/precision_gpu.py", "--dry-run", "--out", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["provenance"]["dry_run"] is True and data["runs"]


def test_throughput_benchmark_dry_run(tmp_path):
    out = tmp_path / "throughput.json"
    done = _run("benchmarks/throughput_gpu.py", "--dry-run", "--variants", "2,3+oo", "--gpus", "2", "--out", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["provenance"]["script"] == "benchmarks/throughput_gpu.py" and data["provenance"]["dry_run"] is True
    for run in data["runs"]:
        assert len(run["ranks"]) == 2, run.get("error", "")[-1500:]
        points = run["ranks"][0]["points"]
        # micro-batches 1 and 2, then 2 accumulation steps on the largest that fitted
        assert [(q["micro_batch"], q["grad_accum"]) for q in points] == [(1, 1), (2, 1), (2, 2)]
        assert all(q["tokens_per_second"] > 0 and q["tokens_per_step"] == q["micro_batch"] * q["grad_accum"] * 32 * 2
                   for q in points)


def test_checkpoint_benchmark_dry_run(tmp_path):
    out = tmp_path / "checkpoint.json"
    done = _run("benchmarks/checkpoint_gpu.py", "--dry-run", "--gpus", "2", "--dir", str(tmp_path / "ckpt"),
                "--out", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = json.loads(out.read_text())["runs"]
    saves = {r["stage"]: {s["name"]: s for s in r["ranks"][0]["saves"]} for r in runs}
    assert saves[2]["save_checkpoint#0"]["bytes"] > 0 and saves[2]["save_16bit_model"]["bytes"] > 0
    # ZeRO-3 writes the 16-bit model only with stage3_gather_16bit_weights_on_model_save
    assert saves[3]["save_16bit_model (gather_16bit_weights_on_model_save=false)"]["bytes"] == 0
    assert saves[3]["save_16bit_model (gather_16bit_weights_on_model_save=true)"]["bytes"] > 0
    assert not any((tmp_path / "ckpt").rglob("*.pt"))  # every checkpoint deleted after counting


def test_nccl_benchmark_dry_run(tmp_path):
    out = tmp_path / "nccl.json"
    done = _run("benchmarks/nccl_gpu.py", "--dry-run", "--gpus", "2", "--out", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert {r["op"] for r in data["results"]} == {"all_reduce", "reduce_scatter", "all_gather"}
    for r in data["results"]:  # nccl-tests' conventions on 2 ranks
        assert abs(r["busbw_GBps"] / r["algbw_GBps"] - (1.0 if r["op"] == "all_reduce" else 0.5)) < 1e-9


def test_notebook_runner_records_every_cell_and_goes_on_after_a_failure(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("import os\nprint(os.environ['DSCOURSE_SCALE'])"),
                nbformat.v4.new_code_cell("raise ValueError('boom')"), nbformat.v4.new_code_cell("print('after')")]
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    before = path.read_text()
    out = tmp_path / "report.json"
    done = _run("tools/run_notebooks_gpu.py", "--notebooks", str(path), "--out", str(out), timeout=120)
    assert done.returncode == 1  # a failing cell fails the run
    entry = json.loads(out.read_text())["notebooks"][0]
    assert [c["status"] for c in entry["cells"]] == ["ran", "failed", "ran"]
    assert entry["cells"][0]["output_tail"] == "gpu\n" and entry["cells"][1]["error"]["evalue"] == "boom"
    assert all(c["disk_free_bytes"] > 0 for c in entry["cells"])

    # the failing cell skipped: "partial"; folded into the first report, the cell records of both calls
    second = tmp_path / "second.json"
    done = _run("tools/run_notebooks_gpu.py", "--notebooks", str(path), "--out", str(second), "--skip", "2",
                timeout=120)
    assert done.returncode == 0
    partial = json.loads(second.read_text())
    assert partial["notebooks"][0]["status"] == "partial" and partial["notebooks"][0]["cells_skipped"] == 1
    from dscourse.gpu_results import merge_notebook_runs

    merged = merge_notebook_runs(merge_notebook_runs({}, json.loads(out.read_text())), partial)
    assert [c["status"] for c in merged["notebooks"][0]["cells"]] == ["ran", "failed", "ran"]
    assert merged["notebooks"][0]["status"] == "failed" and len(merged["runs"]) == 2
    assert entry["status"] == "failed" and entry["cells_failed"] == 1 and path.read_text() == before


def test_every_benchmark_and_the_runner_have_help():
    for script in ("benchmarks/throughput_gpu.py", "benchmarks/checkpoint_gpu.py", "benchmarks/nccl_gpu.py",
                   "benchmarks/gpu_memory.py", "tools/run_notebooks_gpu.py", "tools/gpu_repeatability.py"):
        done = _run(script, "--help", timeout=120)
        assert done.returncode == 0 and "usage" in done.stdout, script


def test_more_ranks_than_gpus_run_on_cpu_ranks(monkeypatch, tmp_path):
    """A 2-rank demo on a one-GPU machine: NCCL refuses two ranks on one GPU, so run_ranks hides the GPU."""
    import subprocess as sp

    from dscourse import launch

    seen = {}
    real = sp.Popen

    def popen(cmd, **kw):
        seen.update(kw["env"])
        return real(cmd, **kw)

    monkeypatch.setattr(launch, "visible_gpus", lambda: 1)
    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    res = launch.run_ranks("dscourse.scripts.collective_bandwidth",
                           ["--max-bytes", "4096", "--iters", "1", "--warmup", "0", "--ops", "all_reduce"],
                           nproc=2, timeout=600, out_dir=tmp_path)
    assert seen["CUDA_VISIBLE_DEVICES"] == "" and seen["DS_ACCELERATOR"] == "cpu"
    assert [r["backend"] for r in res.ranks] == ["gloo", "gloo"]


def test_peak_benchmark_dry_run_records_every_phase(tmp_path):
    out = tmp_path / "peak.jsonl"
    done = _run("benchmarks/gpu_peak.py", "--dry-run", "--models", "Qwen3-0.6B", "--variants", "3+oo", "--steps", "1",
                "--no-expandable", "--parallel", "1", "--out", str(out))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["kind"] == "provenance" and lines[0]["script"] == "benchmarks/gpu_peak.py" and lines[0]["dry_run"]
    points = [r for r in lines if r["kind"] == "point"]
    # two sizes, checkpointing off and on, each step with its three phases
    assert [(p["micro_batch"], p["seq"], p["checkpointing"]) for p in points] == [
        (1, 32, False), (1, 32, True), (2, 64, False), (2, 64, True)]
    assert all(set(s) >= {"between", "forward", "backward", "step_phase"} for p in points for s in p["steps"])
    assert points[0]["family"] == "qwen3" and points[0]["optimizer"] == "DeepSpeedZeroOptimizer_Stage3"
    assert [r["rc"] for r in lines if r["kind"] == "worker"] == [0]
    assert "--deadline" in _run("benchmarks/gpu_peak.py", "--help").stdout


def test_peak_benchmark_folds_its_json_lines_into_the_committed_layout(tmp_path):
    lines = [{"kind": "provenance", "date": "2026-12-04", "gpu": "X"}, {"kind": "ops_build", "seconds": 1},
             {"kind": "point", "model": "m"}, {"kind": "worker", "rc": 0}, {"kind": "trace", "stage": 2}]
    src = tmp_path / "run.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    done = _run("benchmarks/gpu_peak.py", "--fold", str(src), str(tmp_path / "run.json"), "one call")
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["provenance"] == {"date": "2026-12-04", "gpu": "X", "note": "one call"}
    assert data["points"] == [{"model": "m"}] and data["workers"] == [{"rc": 0}] and data["traces"] == [{"stage": 2}]


def test_load_memory_benchmark_measures_every_rank_three_ways(tmp_path):
    """benchmarks/load_memory.py for real on 2 CPU ranks: in the file's dtype a rank's parameters are views of the
    mapped file (no private copy), converting to float32 makes a private copy on every rank, and under ZeRO-3 only
    rank 0 maps the file while every rank holds half the parameters."""
    out = tmp_path / "load.json"
    done = _run("benchmarks/load_memory.py", "--world-sizes", "2", "--out", str(out), timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads(out.read_text())
    size, params = data["provenance"]["file_bytes"], data["provenance"]["params"]
    runs = {(r["how"], r["load_dtype"]): r["ranks"] for r in data["runs"]}
    assert all(r["peak_above_before"]["private"] < 0.05 * size for r in runs[("every_rank", "auto")])
    assert all(abs(r["peak_above_before"]["private"] - 2 * size) < 0.05 * size for r in runs[("every_rank", "float32")])
    rank0, rank1 = runs[("zero3", "auto")]
    assert rank0["peak_above_before"]["mapped"] > 0.9 * size > 20 * rank1["peak_above_before"]["mapped"]
    assert rank0["held_params"] == rank1["held_params"] == params // 2
    assert "gpu" not in data["provenance"] and data["provenance"]["script"] == "benchmarks/load_memory.py"
