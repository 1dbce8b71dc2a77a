"""pyproject.toml, environment.yml and binder/ must list the same packages."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def names(requirements):
    """Normalised distribution names of requirement strings (options and comments dropped)."""
    found = set()
    for line in requirements:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            found.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return found


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = names(PROJECT["dependencies"])
EXTRAS = {extra: names(packages) for extra, packages in PROJECT["optional-dependencies"].items()}


def test_conda_environment_lists_core_notebook_and_test_packages():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    expected = CORE | EXTRAS["notebooks"] | EXTRAS["test"]
    assert names(pip_section) == expected, f"environment.yml differs: {names(pip_section) ^ expected}"


def test_binder_lists_core_and_notebook_packages():
    binder = names((ROOT / "binder" / "requirements.txt").read_text().splitlines())
    expected = CORE | EXTRAS["notebooks"]
    assert binder == expected, f"binder/requirements.txt differs: {binder ^ expected}"
    assert "pip install --no-deps -e ." in (ROOT / "binder" / "postBuild").read_text()


def test_python_versions_agree():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in environment["dependencies"]
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"


def test_field_dependencies_are_present():
    assert {"torch", "numpy", "scipy", "nibabel", "nilearn", "matplotlib", "ipywidgets", "pooch", "scikit-learn",
            "pandas", "tqdm", "pyyaml", "safetensors"} <= CORE
    assert {"jupyterlab", "papermill", "ipykernel"} <= EXTRAS["notebooks"]
    assert {"nbval", "pytest"} <= EXTRAS["test"]
