"""Experiments: a grid of notebook runs (train with 03, evaluate with 04), kept apart, resumable, gathered.

An experiment is a YAML file::

    description: Does splitting tissues into intensity subclasses help?
    notebooks: ../notebooks          # folder of the notebooks, relative to this file
    chain: [03_training, 04_evaluation]
    parameters: {crl_ages: [23, 27, 31, 35]}        # given to every run
    settings:                        # one is chosen when the experiment is run
      cpu: {config_name: cpu-demo, device: cpu}
      gpu: {config_name: gpu, device: cuda}
    arms:                            # what differs between runs
      K=1: {overrides: ["generator={subclasses: {max_subclasses: 1}}"]}
      K=1-4: {}
    repeats: 2                       # seeds 0 and 1, given as the parameter seed

Each run (arm x seed) executes the chain with papermill into its own folder
``<root>/<experiment>/<setting>/<run id>/``: the executed notebooks, each notebook's outputs
(``output_dir`` = the run folder / the notebook's name; the notebooks after the first also get
``trained_dir``, the first one's folder), ``params.yaml`` and, last, ``metrics.tsv`` (the
evaluation's table). The run id is the arm, the seed and a hash of all parameters, so that a
changed setting never reuses old results; ``params.yaml`` also records the fss version and a hash
of each notebook's code (:func:`provenance`, read once when the experiment file is loaded). A run
with ``metrics.tsv`` and the current provenance is done and skipped; one made by other code is stale, left out of the gathered
results and run again, as is a run folder without ``metrics.tsv`` (interrupted), after it is
emptied; a failing run writes ``error.txt`` and the others go on. :func:`gather` puts every finished run's table into one tidy table;
:func:`dice_per_seed` and :func:`spread_over_seeds` reduce it to the Dice of each arm and seed, which
:func:`fss.viz.plot_experiment` draws.

Example
-------
>>> experiment = load_experiment("experiments/subclasses.yaml")  # doctest: +SKIP
>>> for run in plan(experiment, "cpu"):  # doctest: +SKIP
...     print(run.id, status(run, "outputs/experiments"))
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from fss import __version__, source_sha256
from fss.config_checks import read_yaml_file
from fss.evaluation import with_stress_columns
from fss.metrics import mean_over_cases
from fss.paths import atomic_path, locked

ROOT = Path("outputs") / "experiments"
"""Default folder of experiment results, relative to the working directory."""

GATHERED_COLUMNS = ["run", "arm", "seed", "model", "dataset", "case", "stress", "severity", "tissue", "metric", "value"]
"""Columns of :func:`gather`: :data:`fss.evaluation.RESULT_COLUMNS` with the run, its arm and seed in front and the stress
columns of :func:`fss.evaluation.with_stress_columns`."""


@dataclass(frozen=True)
class Experiment:
    """A parsed experiment file (see the module's documentation)."""

    name: str
    description: str
    notebooks: Path
    chain: tuple[str, ...]
    parameters: dict
    settings: dict[str, dict]
    arms: dict[str, dict]
    declared: dict[str, frozenset[str]]
    """The parameters that each notebook of the chain declares."""
    repeats: int = 1
    provenance: dict = field(default_factory=dict)
    """What its runs' results depend on besides their parameters, read once when the file is loaded (:func:`provenance`)."""

    def folder(self, setting: str, root: str | os.PathLike = ROOT) -> Path:
        """``<root>/<experiment>/<setting>``: the runs of ``setting``, each in its own folder, and their gathered results."""
        return Path(root) / self.name / setting


@dataclass(frozen=True)
class Run:
    """One arm at one seed: the parameters every notebook of the chain gets (besides its folders)."""

    experiment: Experiment
    setting: str
    arm: str
    seed: int
    parameters: dict = field(hash=False)

    @property
    def id(self) -> str:
        """``<arm>-seed<seed>-<8 hex digits of the parameters' hash>``, safe as a folder name."""
        digest = hashlib.sha256(json.dumps(self.parameters, sort_keys=True).encode()).hexdigest()[:8]
        return f"{_folder_name(self.arm)}-seed{self.seed}-{digest}"

    def folder(self, root: str | os.PathLike = ROOT) -> Path:
        return self.experiment.folder(self.setting, root) / self.id


def _folder_name(arm: str) -> str:
    """``arm`` with every character but letters, digits, ``-``, ``_`` and ``.`` replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in arm)


RUNNER_PARAMETERS = frozenset({"seed", "output_dir", "trained_dir"})
"""Parameters that the runner gives each run, and an experiment file may not set."""


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read and check an experiment file; its name is the file's stem.

    Raises
    ------
    ValueError
        For a missing or mistyped key, an empty chain or arm list, a chain that is not a list,
        a setting or arm that is not a mapping, two arms whose folder names would be the same
        (``a b`` and ``a_b``), a notebook that does not exist, a parameter that the runner
        sets (:data:`RUNNER_PARAMETERS`), or a parameter that no notebook of the chain declares
        (a typo would otherwise be ignored).
    """
    path = Path(path)
    values = read_yaml_file(path)
    _check_layout(path, values)
    notebooks = (path.parent / values.get("notebooks", ".")).resolve()
    for name in values["chain"]:
        if not (notebooks / f"{name}.ipynb").exists():
            raise ValueError(f"{path}: no notebook {notebooks / f'{name}.ipynb'}")
    declared = {name: _declared(notebooks / f"{name}.ipynb") for name in values["chain"]}
    _check_parameters(path, values, set().union(*declared.values()))
    return Experiment(
        name=path.stem,
        description=str(values.get("description", "")),
        notebooks=notebooks,
        chain=tuple(values["chain"]),
        parameters=dict(values.get("parameters") or {}),
        settings={str(k): dict(v or {}) for k, v in values["settings"].items()},
        arms={str(k): dict(v or {}) for k, v in values["arms"].items()},
        declared=declared,
        repeats=values.get("repeats", 1),
        provenance=provenance(notebooks, tuple(values["chain"])),
    )


def _check_layout(path: Path, values) -> None:
    """Raise ``ValueError`` unless the experiment file's ``values`` have the keys, types and arm names of an experiment."""
    if not isinstance(values, dict):
        raise ValueError(f"{path}: an experiment is a mapping of keys, got {type(values).__name__}")
    known = {"description", "notebooks", "chain", "parameters", "settings", "arms", "repeats"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known: {', '.join(sorted(known))}")
    for key in ("chain", "settings", "arms"):
        if not values.get(key):
            raise ValueError(f"{path}: give at least one entry under {key!r}")
    chain = values["chain"]
    if not isinstance(chain, list) or not all(isinstance(name, str) for name in chain):
        raise ValueError(f"{path}: chain must be a list of notebook names, e.g. [03_training, 04_evaluation], got {chain!r}")
    for key in ("parameters", "settings", "arms"):
        if not isinstance(values.get(key) or {}, dict):
            raise ValueError(f"{path}: {key!r} must be a mapping")
    for key in ("settings", "arms"):
        for name, parameters in values[key].items():
            if not isinstance(parameters or {}, dict):
                raise ValueError(f"{path}: {key} {name!r} must be a mapping of parameters, got {parameters!r}")
    folders = {}
    for arm in values["arms"]:
        folders.setdefault(_folder_name(str(arm)), []).append(str(arm))
    shared = [names for names in folders.values() if len(names) > 1]
    if shared:
        names = " and ".join(repr(name) for name in shared[0])
        raise ValueError(f"{path}: arms {names} would share the folder name {_folder_name(shared[0][0])!r}; rename one")
    repeats = values.get("repeats", 1)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(f"{path}: repeats must be a whole number of at least 1, got {repeats!r}")


def _check_parameters(path: Path, values: dict, declared: set[str]) -> None:
    """Raise ``ValueError`` for a parameter the runner sets itself, or one that no notebook of the chain ``declared``."""
    given = {
        "parameters": values.get("parameters") or {},
        **{f"setting {k}": v or {} for k, v in values["settings"].items()},
        **{f"arm {k}": v or {} for k, v in values["arms"].items()},
    }
    for where, parameters in given.items():
        reserved = sorted(set(parameters) & RUNNER_PARAMETERS)
        if reserved:
            raise ValueError(
                f"{path}: {where} sets {reserved}, which the runner gives each run (seed: 0 to repeats - 1; output_dir and trained_dir: "
                "the run's folders); use repeats for more seeds"
            )
        unknown = sorted(set(parameters) - declared)
        if unknown:
            raise ValueError(f"{path}: {where} sets {unknown}, which no notebook of the chain ({', '.join(values['chain'])}) declares")


def _papermill():
    """The papermill module, or a ValueError that says how to install it."""
    try:
        import papermill
    except ImportError as error:
        raise ValueError("experiments run notebooks with papermill, which is not installed: pip install 'fss[notebooks]'") from error
    return papermill


def _declared(notebook: Path) -> frozenset[str]:
    """Names of the parameters that ``notebook`` declares in its ``parameters`` cell."""
    return frozenset(_papermill().inspect_notebook(str(notebook)))


def provenance(notebooks: Path, chain: tuple[str, ...]) -> dict:
    """What a run's results depend on besides its parameters: the fss version and sources (:func:`fss.source_sha256`), and
    for each notebook of the chain the first 16 hex digits of the sha256 of its code cells (text cells may change without
    making results stale)."""
    code = {}
    for name in chain:
        cells = json.loads((notebooks / f"{name}.ipynb").read_text())["cells"]
        source = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
        code[name] = hashlib.sha256(source.encode()).hexdigest()[:16]
    return {"fss": __version__, "fss_source": source_sha256(), "notebooks": code}


def plan(experiment: Experiment, setting: str) -> list[Run]:
    """Every run of ``experiment`` at ``setting``: arms in file order, then seeds 0..repeats-1."""
    if setting not in experiment.settings:
        raise ValueError(f"experiment {experiment.name} has no setting {setting!r}; choose one of {', '.join(experiment.settings)}")
    runs = []
    for arm, changes in experiment.arms.items():
        for seed in range(experiment.repeats):
            parameters = {**experiment.parameters, **experiment.settings[setting], **changes, "seed": seed}
            runs.append(Run(experiment, setting, arm, seed, parameters))
    return runs


def status(run: Run, root: str | os.PathLike = ROOT) -> str:
    """``"done"`` (its metrics exist, made by the current code), ``"stale"`` (made by other code: see :func:`provenance`),
    ``"failed"`` (its last attempt left an error), ``"running"`` (another process holds its lock: see :func:`execute`),
    ``"interrupted"`` or ``"pending"``."""
    folder = run.folder(root)
    if (folder / "metrics.tsv").exists():
        return "done" if _done(run, root) else "stale"
    if (folder / "error.txt").exists():
        return "failed"
    if not folder.exists():
        return "pending"
    with locked(_lock(run, root), wait=False) as free:
        return "interrupted" if free else "running"


def _done(run: Run, root: str | os.PathLike) -> bool:
    """Whether ``run``'s metrics exist and were made by the current code (its status without a look at its lock)."""
    folder = run.folder(root)
    return (folder / "metrics.tsv").exists() and read_yaml_file(folder / "params.yaml").get("provenance") == run.experiment.provenance


def _lock(run: Run, root: str | os.PathLike) -> Path:
    """The lock a run holds while it runs: a hidden ``.<run id>.lock`` beside its folder."""
    return run.folder(root).parent / f".{run.id}.lock"


def execute(run: Run, root: str | os.PathLike = ROOT, kernel: str | None = None) -> str:
    """Run the chain of ``run`` unless it is done; returns its status afterwards: ``"done"``, ``"failed"``, or
    ``"running"`` when another process is running it (it is left alone).

    A run holds a lock (a hidden ``.<run id>.lock`` beside its folder) while it runs. An
    interrupted, failed or stale attempt's folder is emptied first. A notebook that raises stops
    the run: its error goes to ``error.txt`` (the executed notebook, up to the failing cell, stays
    beside it). Ctrl-C is not caught, also when the notebook's kernel receives it first: the folder
    stays incomplete and the next call starts over.
    """
    papermill = _papermill()
    folder = run.folder(root)
    with locked(_lock(run, root), wait=False) as mine:
        if not mine:
            return "running"
        if _done(run, root):
            return "done"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        with atomic_path(folder / "params.yaml") as temporary:
            temporary.write_text(
                yaml.safe_dump(
                    {
                        "experiment": run.experiment.name,
                        "setting": run.setting,
                        "arm": run.arm,
                        "seed": run.seed,
                        "parameters": run.parameters,
                        "provenance": run.experiment.provenance,
                    },
                    sort_keys=False,
                )
            )
        first = folder.resolve() / run.experiment.chain[0]
        try:
            for index, name in enumerate(run.experiment.chain):
                notebook = run.experiment.notebooks / f"{name}.ipynb"
                parameters = {**run.parameters, "output_dir": str(folder.resolve() / name)}
                if index > 0:
                    parameters["trained_dir"] = str(first)
                parameters = {key: value for key, value in parameters.items() if key in run.experiment.declared[name]}  # those it declares
                papermill.execute_notebook(
                    notebook,
                    folder / f"{name}.ipynb",
                    parameters=parameters,
                    cwd=str(run.experiment.notebooks),
                    kernel_name=kernel,
                    progress_bar=False,
                    extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
                )  # no start-up chatter from each kernel, nor its complaint when Ctrl-C closed the runner's end first
            table = read_results(folder.resolve() / run.experiment.chain[-1] / "metrics.tsv")
        except Exception as error:  # a failing notebook (papermill's error names the cell) or a chain without metrics
            if getattr(error, "ename", None) == "KeyboardInterrupt":  # Ctrl-C reached the kernel first: an interrupt, not a failure
                raise KeyboardInterrupt from None
            with atomic_path(folder / "error.txt") as temporary:
                temporary.write_text(traceback.format_exc())
            return "failed"
        with atomic_path(folder / "metrics.tsv") as temporary:
            table.to_csv(temporary, sep="\t", index=False)
        return "done"


def read_results(path: Path) -> pd.DataFrame:
    """A run's table of results (columns ``model``, ``dataset``, ``case``, ``tissue``, ``metric`` and a numeric ``value``).

    Raises
    ------
    ValueError
        Naming ``path``, if it is empty, not a table, lacks a column, or holds a value that is not a number.
    """
    try:
        table = pd.read_csv(path, sep="\t")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a table of results ({' '.join(str(error).split())})") from error
    missing = [column for column in ("model", "dataset", "case", "tissue", "metric", "value") if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a table of results (no column {', '.join(missing)})")
    numbers = pd.to_numeric(table["value"], errors="coerce")
    text = numbers.isna() & table["value"].notna()
    if text.any():
        row = int(text.to_numpy().argmax())
        raise ValueError(f"{path}: line {row + 2} has the value {table['value'].iloc[row]!r}, not a number")
    return table.assign(value=numbers)


def select(runs: list[Run], only: str | None) -> list[Run]:
    """The runs whose id or arm is ``only`` (all of them when ``only`` is None).

    Raises
    ------
    ValueError
        If none is.
    """
    chosen = [run for run in runs if only in (None, run.id, run.arm)]
    if not chosen:
        raise ValueError(
            f"no run is called {only!r}; runs: {', '.join(run.id for run in runs)}; arms: {', '.join(dict.fromkeys(r.arm for r in runs))}"
        )
    return chosen


def gather(experiment: Experiment, setting: str, root: str | os.PathLike = ROOT) -> pd.DataFrame:
    """One tidy table of every run done with the current code (columns :data:`GATHERED_COLUMNS`, then the parameters that
    differ between runs); stale runs are left out. A done run's table that cannot be read is a ValueError that names it
    (:func:`read_results`).

    ``stress`` and ``severity`` as :func:`fss.evaluation.with_stress_columns` gives them.
    """
    runs = plan(experiment, setting)
    varying = sorted(
        {key for run in runs for key in run.parameters if len({json.dumps(r.parameters.get(key), sort_keys=True) for r in runs}) > 1} - {"seed"}
    )
    tables = []
    for run in runs:
        if not _done(run, root):
            continue
        table = read_results(run.folder(root) / "metrics.tsv")
        table = with_stress_columns(table).assign(run=run.id, arm=run.arm, seed=run.seed)
        for key in varying:
            table[key] = json.dumps(run.parameters.get(key), sort_keys=True)
        tables.append(table)
    if not tables:
        return pd.DataFrame(columns=[*GATHERED_COLUMNS, *varying])
    return pd.concat(tables, ignore_index=True)[[*GATHERED_COLUMNS, *varying]]


def dice_per_seed(results: pd.DataFrame) -> pd.DataFrame:
    """Dice of every arm and seed per place and tissue, averaged over the cases, from a :func:`gather` table.

    Returns columns ``where`` (the dataset for clean images, ``"<kind> <severity>"`` under a
    stress), ``stress``, ``severity``, ``arm``, ``seed``, ``tissue`` and ``value``; the rows of
    tissue ``"mean"`` average each case's tissues (:func:`fss.metrics.mean_over_cases`). Places and arms keep the order
    in which they appear.
    """
    dice = results[results.metric == "dice"]
    where = dice.dataset.where(dice.stress.isna(), dice.stress + " " + dice.severity.astype("Int64").astype(str))
    keys = ["where", "stress", "severity", "arm", "seed"]
    means = mean_over_cases(dice.assign(where=where), by=keys)
    return pd.concat([means[means.tissue == "mean"], means[means.tissue != "mean"]], ignore_index=True)[[*keys, "tissue", "value"]]


def spread_over_seeds(per_seed: pd.DataFrame, tissue: str = "mean") -> pd.DataFrame:
    """Mean, lowest and highest Dice over the seeds of each arm at each place (rows of :func:`dice_per_seed`), and the seed count."""
    chosen = per_seed[per_seed.tissue == tissue]
    return chosen.groupby(["where", "arm"], sort=False).value.agg(["mean", "min", "max", "count"])


def run_experiment(
    experiment: Experiment | str | os.PathLike,
    setting: str,
    root: str | os.PathLike = ROOT,
    only: str | None = None,
    kernel: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Execute every run not done yet (or only the run with id or arm ``only``), then write and return the gathered table.

    Each run's outcome is printed, with the minutes it took when it ran here.

    ``experiment`` is an :class:`Experiment` or the path of its file. The table goes to
    ``results.tsv`` in :meth:`Experiment.folder`; beside it ``dice.tsv``, the Dice of each arm and
    seed per place and tissue (:func:`dice_per_seed`, a small table to keep or share), and their
    figure (:func:`fss.viz.plot_experiment`), ``results.png``.
    """
    from tqdm.auto import tqdm

    if not isinstance(experiment, Experiment):
        experiment = load_experiment(experiment)
    runs = select(plan(experiment, setting), only)
    for run in tqdm(runs, desc=experiment.name, unit="run", disable=not progress):
        done_before, started = _done(run, root), time.monotonic()
        result = execute(run, root, kernel)
        took = "" if done_before or result == "running" else f" in {(time.monotonic() - started) / 60:.1f} minutes"
        notes = {"failed": f" (see {run.folder(root) / 'error.txt'})", "running": " in another process: left to it, not gathered yet"}
        tqdm.write(f"{run.id}: {result}{took}" + notes.get(result, ""))
    table = gather(experiment, setting, root)
    folder = experiment.folder(setting, root)
    with atomic_path(folder / "results.tsv", overwrite=True) as temporary:
        table.to_csv(temporary, sep="\t", index=False)
    if len(table):
        import matplotlib.pyplot as plt

        from fss.viz import plot_experiment, save_figure

        per_seed = dice_per_seed(table)
        with atomic_path(folder / "dice.tsv", overwrite=True) as temporary:
            per_seed.to_csv(temporary, sep="\t", index=False)
        figure = plot_experiment(per_seed, f"{experiment.name}, {setting} setting")
        save_figure(figure, folder / "results.png")
        plt.close(figure)
    return table
