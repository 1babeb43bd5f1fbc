#!/usr/bin/env bash
# The CPU test suite on another machine that has no package index: wheels carried in WHEELS (default .devwheels),
# installed over that machine's own torch/numpy into a private folder; every GPU hidden so everything takes the CPU
# path; the browser tests skip there (no Chromium). Used to prove the committed outputs portable to a second CPU
# (the lent GPU machine's, via the device tool):
#   bash tools/cpu_check_elsewhere.sh "$OUT" [pytest args...]
# Writes OUT/cpu.txt (the CPU's model and flags), OUT/pytest.log and OUT/junit.xml.
set -uo pipefail
out="${1:?usage: cpu_check_elsewhere.sh OUT_DIR [pytest args]}"; shift
wheels="${WHEELS:-.devwheels}"
mkdir -p "$out"
{ lscpu; echo; python3 -c "import platform; print(platform.python_version())"; nproc; } > "$out/cpu.txt" 2>&1
site=/tmp/dscourse-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl \
  || { echo "installing the carried wheels failed" | tee "$out/pytest.log"; exit 1; }
# DS_ACCELERATOR=cpu as well: the deepspeed launcher sets CUDA_VISIBLE_DEVICES for its ranks itself
export PYTHONPATH="$PWD:$site" CUDA_VISIBLE_DEVICES="" DS_ACCELERATOR=cpu HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export PATH="$site/bin:$PATH"
python3 -c "import torch, deepspeed, transformers, nbval; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)" \
  >> "$out/cpu.txt" 2>&1
# written as it runs: a run stopped at its time limit still leaves what finished
python3 -m pytest -p no:cacheprovider --junitxml="$out/junit.xml" "$@" > "$out/pytest.log" 2>&1
