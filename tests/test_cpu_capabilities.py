"""The notebooks that train pass their checks under every lower instruction set too (``make test-cpus``).

nbval runs every notebook under this CPU's own instruction set (``make test``). Float32
training gives other last bits on another instruction set, and hundreds of iterations amplify
them, so the committed outputs of notebooks 03 and 06 were produced on one CPU and must hold,
within the tolerance their cells declare (``tests/nbval_tolerance.py``), on others. This test runs
both notebooks' checks again on this machine once for each instruction set that PyTorch's CPU
kernels can be lowered to (``ATEN_CPU_CAPABILITY``), with oneDNN's capped at AVX2
(``ONEDNN_MAX_CPU_ISA``): on an AVX-512 CPU as an AVX2 CPU and as one without vector
instructions, on an AVX2 CPU as the latter.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
NOTEBOOKS = ("03_training.ipynb", "06_experiments.ipynb")
LOWER = {"AVX512": ("avx2", "default"), "AVX2": ("default",)}
"""For each capability of PyTorch's CPU kernels (as ``torch.backends.cpu.get_cpu_capability()`` names it), every lower one."""


def capability(environment: dict) -> str:
    """The capability PyTorch's CPU kernels use in a fresh process with ``environment``."""
    command = [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"]
    return subprocess.run(command, env=environment, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.cpus
@pytest.mark.parametrize("lower", ["avx2", "default"])
def test_training_notebooks_pass_their_checks_under_a_lower_instruction_set(lower, tmp_path):
    native = torch.backends.cpu.get_cpu_capability()
    if lower not in LOWER.get(native, ()):
        pytest.skip(f"PyTorch's CPU kernels here use {native}: {lower} is not lower")
    environment = {**os.environ, "ATEN_CPU_CAPABILITY": lower, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert capability(environment) == lower.upper()
    # a copy, so that notebook 06 runs its experiment afresh instead of finding the runs of the suite's own pass done
    for folder in ("notebooks", "experiments"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for file in ("pyproject.toml", "conftest.py", "tests/nbval_tolerance.py", "tests/nbval_sanitize.cfg"):
        (tmp_path / file).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / file, tmp_path / file)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *(f"notebooks/{name}" for name in NOTEBOOKS)]
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, f"under ATEN_CPU_CAPABILITY={lower}:\n{result.stdout[-6000:]}"
    assert " passed" in result.stdout.splitlines()[-1] and "skipped" not in result.stdout.splitlines()[-1]
