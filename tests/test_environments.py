"""pyproject.toml, environment.yml and binder/ must list the same packages; Colab installs this version (and notebook 06 clones it)."""

import importlib.metadata
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

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


def pins(requirements):
    """{name: pinned version} of requirement strings of the form name==version (other lines skipped)."""
    found = {}
    for line in requirements:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            specifiers = list(requirement.specifier)
            assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{line}: not pinned with =="
            found[requirement.name.lower().replace("_", "-")] = specifiers[0].version
    return found


def test_environments_pin_versions_that_pyproject_allows():
    allowed = {
        Requirement(r).name.lower().replace("_", "-"): Requirement(r).specifier
        for r in [*PROJECT["dependencies"], *(r for extra in PROJECT["optional-dependencies"].values() for r in extra)]
    }
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    for where, pinned in (("environment.yml", pins(pip_section)), ("binder", pins((ROOT / "binder" / "requirements.txt").read_text().splitlines()))):
        for name, version in pinned.items():
            assert allowed[name].contains(version), f"{where}: {name}=={version} is outside pyproject.toml's {allowed[name]}"


def test_python_versions_agree():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in environment["dependencies"]
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"


def test_every_notebook_installs_a_branch_of_this_repository_and_checks_the_version_it_was_written_for():
    """On Colab the notebooks install the default branch; each then refuses, in one line, an fss of another version."""
    branches = subprocess.run(["git", "branch", "--list", "--all", "--format=%(refname:lstrip=-1)"], cwd=ROOT, capture_output=True, text=True)
    for notebook in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        text = notebook.read_text()
        installs = re.findall(r"git\+https://github\.com/fetalsynthseg/fss@([\w./-]+)", text)
        targets = installs + re.findall(r"git clone [^\n]*--branch ([\w./-]+)", text)
        assert targets and set(targets) == {"main"}, (notebook.name, targets)  # a branch, not a tag a release may not have made
        if branches.returncode == 0 and branches.stdout.strip():  # in a git checkout: the branch exists here
            assert "main" in branches.stdout.split(), f"{notebook.name} installs the branch main, which this repository does not have"
        assert f'WRITTEN_FOR = \\"{PROJECT["version"]}\\"' in text, notebook.name


def test_the_version_check_refuses_another_fss_in_one_line(monkeypatch):
    notebook = json.loads((ROOT / "notebooks" / "00_setup.ipynb").read_text())
    [cell] = [c for c in notebook["cells"] if "WRITTEN_FOR" in "".join(c["source"])]
    lines = "".join(cell["source"]).splitlines()
    source = "\n".join("    pass" if line.lstrip().startswith("%") else line for line in lines)  # IPython's magics aside
    exec(source, {})  # the installed fss is the one the notebooks were written for
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.9")
    with pytest.raises(RuntimeError, match=f"written for fss {PROJECT['version']} but fss 9.9 is installed"):
        exec(source, {})


def test_colab_clones_the_same_branch_for_the_experiments_notebook():
    """On Colab, notebook 06 needs the experiment files and the notebooks they chain, which the package does not hold."""
    notebook = json.loads((ROOT / "notebooks" / "06_experiments.ipynb").read_text())
    [cell] = [c for c in notebook["cells"] if "google.colab" in "".join(c["source"])]
    source = "".join(cell["source"])
    assert "git clone --quiet --depth 1 --branch main https://github.com/fetalsynthseg/fss /content/fss" in source
    assert "%cd /content/fss/notebooks" in source  # where the notebook's relative paths hold


def test_the_experiments_notebook_needs_only_the_notebooks_and_experiments_folders(tmp_path, monkeypatch):
    from fss.experiments import load_experiment, plan

    for folder in ("notebooks", "experiments"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    monkeypatch.chdir(tmp_path / "notebooks")  # as the Colab cell leaves it, in a clone
    notebook = json.loads(Path("06_experiments.ipynb").read_text())
    [parameters] = [c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    namespace = {}
    exec("".join(parameters["source"]), namespace)  # the notebook's defaults
    experiment = load_experiment(namespace["experiment_file"])
    assert experiment.notebooks == tmp_path / "notebooks" and plan(experiment, namespace["setting"])
    assert Path(namespace["full_results"]).resolve().is_relative_to(tmp_path / "experiments")  # the shipped results of a full run
    assert Path(namespace["full_results"]).is_file()


def test_the_experiments_notebook_outside_a_clone_says_in_one_line_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a pip-installed fss, the notebook downloaded alone
    notebook = json.loads((ROOT / "notebooks" / "06_experiments.ipynb").read_text())
    [parameters] = [c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    [first_use] = [c for c in notebook["cells"] if c["cell_type"] == "code" and "load_experiment(experiment_file)" in "".join(c["source"])]
    namespace = {"Path": Path}
    exec("".join(parameters["source"]), namespace)
    with pytest.raises(FileNotFoundError, match=r"subclasses.yaml not found: run this notebook from the notebooks/ folder of a clone"):
        exec("".join(first_use["source"]), namespace)
