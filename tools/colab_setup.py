#@title Setup (Colab: installs DeepSpeed and the course package)
# In Google Colab (or with DSCOURSE_SETUP=1) install what this notebook needs and the runtime lacks;
# elsewhere install nothing and say what is missing. Each step fails with one line that says what to do.
import importlib.metadata
import importlib.util
import os
import subprocess
import sys

REPOSITORY = "{{repository}}"  # _config.yml's repository.url: where the course package is installed from
PINS = {"deepspeed": "{{deepspeed}}", "hjson": "{{hjson}}", "accelerate": "{{accelerate}}",  # requirements.txt
        "peft": "{{peft}}"}


def installed(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def release(version):
    """(1, 15, 0) from "1.15.0" or "1.15.0.dev0+abc": enough to compare releases."""
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def setup_steps(versions, have_course, package):
    """The installs this runtime needs: (what, pip arguments, what to do if it fails)."""
    steps = []
    if versions.get("deepspeed") != PINS["deepspeed"]:
        steps.append((f"DeepSpeed {PINS['deepspeed']}", [f"deepspeed=={PINS['deepspeed']}", f"hjson=={PINS['hjson']}"],
                      "DeepSpeed installs from source: check that the runtime has network access and g++, "
                      "then run this cell again"))
    if versions.get("accelerate") is None or release(versions["accelerate"]) < release(PINS["accelerate"]):
        # Accelerate 1.14 unties GPT-2's lm_head from wte under FSDP2 (notebook 06); 1.15 does not.
        steps.append((f"Accelerate {PINS['accelerate']}", [f"accelerate=={PINS['accelerate']}"],
                      "run this cell again; if pip keeps failing, restart the runtime first"))
    if versions.get("peft") is None or release(versions["peft"]) < release(PINS["peft"]):
        steps.append((f"PEFT {PINS['peft']}", [f"peft=={PINS['peft']}"],  # notebook 07's LoRA fine-tuning
                      "run this cell again; if pip keeps failing, restart the runtime first"))
    if not have_course:
        steps.append(("the course package dscourse", [package],
                      "set repository.url in _config.yml to where this course is published and rebuild the notebooks "
                      "(python tools/notebooks.py build), or upload a wheel of the course (pip wheel --no-deps . in a "
                      "clone) and set DSCOURSE_PACKAGE to its path before running this cell"))
    return steps


def system_steps(in_colab, have_libaio):
    """The Debian/Ubuntu packages to install with apt-get: libaio's headers for DeepSpeed's async_io op (notebook 07's
    NVMe offload), in Colab only; elsewhere the README says to install it."""
    return [["libaio-dev"]] if in_colab and not have_libaio else []


def setup():
    for packages in system_steps("google.colab" in sys.modules, os.path.exists("/usr/include/libaio.h")):
        print(f"Setup: apt-get install {' '.join(packages)} ...")
        try:
            proc = subprocess.run(["apt-get", "install", "-y", "-qq", *packages], capture_output=True, text=True,
                                  timeout=600)
        except subprocess.TimeoutExpired:
            raise SystemExit("Setup: apt-get took over 10 minutes and was stopped: run this cell again.") from None
        if proc.returncode != 0:
            raise SystemExit(f"Setup: apt-get install {' '.join(packages)} failed: run `!apt-get update` in a cell, "
                             "then this cell again.")
    versions = {name: installed(name) for name in PINS}
    package = os.environ.get("DSCOURSE_PACKAGE") or f"git+{REPOSITORY}"
    steps = setup_steps(versions, importlib.util.find_spec("dscourse") is not None, package)
    if not steps:
        return
    if "google.colab" not in sys.modules and os.environ.get("DSCOURSE_SETUP") != "1":
        missing = ", ".join(what for what, _, _ in steps)
        raise SystemExit(f"Setup: {missing} missing here. In a clone of the course run "
                         "`pip install -r requirements.txt -e .` (README), or set DSCOURSE_SETUP=1 and run this "
                         "cell again to install them into this environment.")
    for what, args, fix in steps:
        print(f"Setup: installing {what} ...")
        try:
            proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], capture_output=True,
                                  text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"Setup: installing {what} took over 30 minutes and was stopped: {fix}.") from None
        if proc.returncode != 0:
            last = next((ln.strip() for ln in reversed((proc.stderr + proc.stdout).splitlines()) if ln.strip()),
                        f"pip exited with {proc.returncode}")
            raise SystemExit(f"Setup: could not install {what} ({last}): {fix}.")
    importlib.invalidate_caches()


if __name__ == "__main__":  # a notebook cell runs as __main__; tests import the functions
    setup()
