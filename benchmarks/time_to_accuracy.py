"""Time to accuracy: mean Dice of the held-out CRL ages against minutes of CPU training, per recipe and seed.

Each recipe (a packaged configuration, or a YAML file such as the earlier recipes kept in
``benchmarks/recipes/``) is planned for ``--minutes`` of training on
this machine: a short run of its training steps gives the seconds per iteration, and the plan is
that many minutes' worth of iterations, so the learning-rate schedule ends when the time does.
Every seed of a recipe shares its plan (``plan-<recipe>-<mode>.json``). Training stops at the
iteration where the plan reaches each mark (``--marks``, minutes) and the last checkpoint is scored
there: the held-out CRL ages (the configuration's validation ages) segmented on their own grids
through the path of ``fss segment`` (:func:`fss.evaluation.crl_dice`). Training seconds (the log's:
steps only) and scoring seconds are recorded apart.

These ages choose between recipes, so they are validation data for the recipes, not a test.

With ``--first-stage CONFIG`` (coarse to fine: ``cpu-model-coarse``), each seed first trains that
configuration to its end (its own iterations, in ``<first>-<mode>-seed<k>``), and every recipe starts
from its last weights (``initialize_from``): the recipe, labelled ``<first>+<recipe>``, is planned
for ``--minutes`` after the first stage, and its rows count the first stage's training minutes in
(``first_stage_minutes``), with the first stage's end scored as iteration 0.

Runs are folders ``<recipe>-<mode>-seed<k>`` under ``--out``, each with ``marks.tsv``. A mark
already scored is not run again, and a run continues from its last mark (training resumes bit
for bit), so a comparison can be built up over several sittings; run one recipe after the other on
a quiet machine, and compare iterations as well as minutes. The table of every run under ``--out``
is printed and written to ``dice.tsv`` there, and the figure (Dice against training minutes, one
line per recipe, mode and seed) to ``--figure``.

Run: python benchmarks/time_to_accuracy.py --recipes benchmarks/recipes/cpu-model-0.1.yaml cpu-model --seeds 0 1 --minutes 60 --marks 10 30 60
     python benchmarks/time_to_accuracy.py --recipes cpu-model --first-stage cpu-model-coarse --seeds 0 1 --minutes 50 --marks 20 50
     python benchmarks/time_to_accuracy.py --recipes cpu-model --mode real --seeds 0 --minutes 60 --marks 10 30 60
"""

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from fss.checkpoint import read_metadata
from fss.device import describe_device
from fss.evaluation import crl_dice
from fss.labels import TISSUE_ORDER
from fss.paths import atomic_path
from fss.train import train
from fss.training_config import TrainConfig
from fss.training_data import prepare_crl
from fss.viz import save_figure

TIMING_ITERATIONS = (5, 15)
"""The plan's seconds per iteration: the training seconds between these two iterations of a timing run."""


def recipe_label(name: str) -> str:
    return Path(name).name.removesuffix(".yaml")


class Volumes:
    """Training and validation volumes as :func:`fss.train.train` prepares them, once per grid, kind of data and seed."""

    def __init__(self):
        self.prepared = {}

    def __call__(self, config: TrainConfig):
        with_seeds = config.mode != "real"
        multiple = config.network().multiple
        key = (config.spacing, with_seeds, config.seed if with_seeds else None, config.ages_to_train(), config.validation_ages, multiple)
        if key not in self.prepared:
            self.prepared.clear()
            self.prepared[key] = (
                prepare_crl(config.ages_to_train(), config.spacing, with_seeds, config.seeds_dir, config.seed, progress=True),
                prepare_crl(config.validation_ages, config.spacing, False, box_multiple=multiple),
            )
        return self.prepared[key]


def plan(config: TrainConfig, label: str, minutes: float, marks: list[float], out: Path, volumes: Volumes) -> dict:
    """Iterations for ``minutes`` of training and the iteration of each mark, timed once and kept in ``out``."""
    path = out / f"plan-{label}-{config.mode}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved["minutes"] == minutes and saved["marks"] == marks:
            return saved
        raise ValueError(f"{path} plans {saved['minutes']} minutes with marks {saved['marks']}: use those, or another --out")
    training, validation = volumes(config)
    first, last = TIMING_ITERATIONS
    with tempfile.TemporaryDirectory() as folder:
        timing = TrainConfig(**{**config.to_dict(), "iterations": 10 * last, "validation_every": 10 * last})
        train(timing, folder, until=last, progress=False, training=training, validation=validation)
        seconds = pd.read_csv(Path(folder) / "log.csv").set_index("iteration")["seconds"]
    per_iteration = float(seconds[last] - seconds[first]) / (last - first)
    result = {
        "recipe": label,
        "mode": config.mode,
        "minutes": minutes,
        "marks": marks,
        "seconds_per_iteration": per_iteration,
        "iterations": max(1, round(minutes * 60 / per_iteration)),
        "mark_iterations": [max(1, round(mark * 60 / per_iteration)) for mark in marks],
        "machine": describe_device("cpu"),
    }
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(result, indent=1))
    return result


def training_minutes(folder: Path, iteration: int) -> float:
    """Minutes of training steps (validation excluded) of the run in ``folder`` up to ``iteration``, from its ``log.csv``."""
    return float(pd.read_csv(folder / "log.csv").set_index("iteration").loc[iteration, "seconds"]) / 60


def timed_crl_dice(folder: Path, validation_ages: tuple[int, ...]) -> tuple[pd.DataFrame, float]:
    """:func:`fss.evaluation.crl_dice` of the last checkpoint in ``folder`` (the held-out ages on their own grids), and its seconds."""
    started = time.perf_counter()
    return crl_dice(folder / "last", list(validation_ages)), time.perf_counter() - started


first_stage_dice = functools.cache(timed_crl_dice)
"""The same for a first stage's end, which every recipe starting from it scores as its iteration 0: computed once."""


def score(
    folder: Path, config: TrainConfig, label: str, mark: float, iteration: int, minutes: float, first_stage_minutes: float, scored: tuple
) -> dict:
    """A row of ``marks.tsv`` from ``scored``, what :func:`timed_crl_dice` returned for the run in ``folder``."""
    scores, seconds = scored
    row = {
        "recipe": label,
        "mode": config.mode,
        "seed": config.seed,
        "mark_minutes": mark,
        "iteration": iteration,
        "first_stage_minutes": first_stage_minutes,
        "training_minutes": first_stage_minutes + minutes,
        "scoring_seconds": seconds,
        "mean_dice": float(np.nanmean(scores.to_numpy())),
        **scores.mean().to_dict(),
    }
    print(
        f"{folder.name}: mark {mark} min, iteration {iteration}, {row['training_minutes']:.1f} training minutes, mean Dice {row['mean_dice']:.3f}",
        flush=True,
    )
    return row


def train_to(config: TrainConfig, folder: Path, volumes: Volumes, until: int | None = None) -> None:
    """Train ``config`` in ``folder`` up to iteration ``until`` (its end when None), resuming the run there if it holds one."""
    training, validation = volumes(config)
    resume = (folder / "last_state.json").exists()
    train(config, folder, resume=resume, overwrite=not resume, until=until, progress=True, training=training, validation=validation)


def first_stage(config: TrainConfig, label: str, out: Path, volumes: Volumes) -> tuple[Path, float]:
    """Train one seed of the first stage to its end (or finish an interrupted one); its folder and training minutes.

    A folder that has finished is used as it is, after checking that its checkpoint was trained with ``config``.
    """
    folder = out / f"{label}-{config.mode}-seed{config.seed}"
    metadata = train_to_end(TrainConfig(**{**config.to_dict(), "validation_every": config.iterations}), folder, volumes)
    return folder, metadata["training_seconds"] / 60


def train_to_end(config: TrainConfig, folder: Path, volumes: Volumes) -> dict:
    """Train ``config`` in ``folder`` to its last iteration unless the run there has got there (an interrupted one is
    resumed); the last checkpoint's metadata. A finished run trained with other settings is a ValueError."""
    metadata = read_metadata(folder / "last") if (folder / "last.json").exists() else None
    if metadata is None or metadata["iterations"] != config.iterations:
        train_to(config, folder, volumes)
        metadata = read_metadata(folder / "last")
    changed = config.differences(metadata["training"])
    if changed:
        raise ValueError(f"{folder} was trained with other settings ({', '.join(changed)}): move it away, or use another --out")
    return metadata


def run(config: TrainConfig, label: str, planned: dict, out: Path, volumes: Volumes, start: tuple[Path, float] | None = None) -> pd.DataFrame:
    """Train one seed of a recipe mark by mark, scoring each mark on the own grids; the rows of ``marks.tsv``.

    ``start``: the folder and training minutes of the first stage this run starts from (its last weights), scored
    as iteration 0.
    """
    folder = out / f"{label}-{config.mode}-seed{config.seed}"
    table_path = folder / "marks.tsv"
    done = pd.read_csv(table_path, sep="\t") if table_path.exists() else pd.DataFrame()
    first_folder, first_minutes = start if start else (None, 0.0)
    config = TrainConfig(
        **{
            **config.to_dict(),
            "iterations": planned["iterations"],
            "validation_every": planned["iterations"],
            **({"initialize_from": str(first_folder / "last")} if start else {}),
        }
    )
    rows = done.to_dict("records")

    def save():
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(table_path, overwrite=True) as temporary:
            pd.DataFrame(rows).to_csv(temporary, sep="\t", index=False)

    if start and not any(row["iteration"] == 0 for row in rows):
        scored = first_stage_dice(first_folder, tuple(config.validation_ages))
        rows.insert(0, score(first_folder, config, label, 0.0, 0, 0.0, first_minutes, scored))
        save()
    for mark, iteration in zip(planned["marks"], planned["mark_iterations"]):
        if any(row["iteration"] == iteration for row in rows):
            continue
        train_to(config, folder, volumes, until=iteration)
        scored = timed_crl_dice(folder, tuple(config.validation_ages))
        rows.append(score(folder, config, label, mark, iteration, training_minutes(folder, iteration), first_minutes, scored))
        save()
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame):
    """Mean Dice against training minutes: one line per recipe, mode and seed."""
    figure, axes = plt.subplots(figsize=(6.4, 4), layout="constrained")
    styles = {"synthetic": "-", "real": "--", "mixed": ":"}
    colors = dict(zip(sorted(table["recipe"].unique()), plt.get_cmap("tab10").colors))
    markers = "osD^v<>"
    for (recipe, mode, seed), rows in table.groupby(["recipe", "mode", "seed"]):
        rows = rows.sort_values("training_minutes")
        axes.plot(
            rows["training_minutes"],
            rows["mean_dice"],
            styles.get(mode, "-"),
            marker=markers[seed % len(markers)],
            markersize=4,
            color=colors[recipe],
            label=f"{recipe}, {mode}, seed {seed}",
        )
    axes.set_xlabel("training minutes (2 CPU cores, validation and scoring excluded)")
    axes.set_ylabel("mean Dice, held-out CRL ages, own grids")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipes", nargs="+", default=["benchmarks/recipes/cpu-model-0.1.yaml", "cpu-model"], help="packaged configurations or YAML files"
    )
    parser.add_argument("--mode", choices=["synthetic", "real"], default="synthetic")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--minutes", type=float, default=60.0, help="training minutes each recipe is planned for")
    parser.add_argument("--marks", nargs="+", type=float, default=[10.0, 30.0, 60.0], help="minutes at which the last checkpoint is scored")
    parser.add_argument("--first-stage", metavar="CONFIG", help="a configuration each seed trains first; the recipes start from its last weights")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="an option for every recipe")
    parser.add_argument("--out", default="outputs/time_to_accuracy")
    parser.add_argument("--figure", default="docs/figures/time_to_accuracy.png")
    args = parser.parse_args()
    if max(args.marks) > args.minutes:
        parser.error(f"marks {args.marks} go beyond the {args.minutes} planned minutes")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    volumes = Volumes()
    options = [f"mode={args.mode}", "device=cpu", *args.overrides]
    first = TrainConfig.load(args.first_stage, options) if args.first_stage else None
    for name in args.recipes:
        label = f"{recipe_label(args.first_stage)}+{recipe_label(name)}" if first else recipe_label(name)
        base = TrainConfig.load(name, options)
        planned = plan(base, label, args.minutes, sorted(args.marks), out, volumes)
        print(
            f"{label} ({args.mode}): {planned['seconds_per_iteration']:.2f} s per iteration on {planned['machine']}, "
            f"{planned['iterations']} iterations planned, marks at iterations {planned['mark_iterations']}",
            flush=True,
        )
        for seed in args.seeds:
            start = first_stage(TrainConfig(**{**first.to_dict(), "seed": seed}), recipe_label(args.first_stage), out, volumes) if first else None
            run(TrainConfig(**{**base.to_dict(), "seed": seed}), label, planned, out, volumes, start)
    table = pd.concat([pd.read_csv(path, sep="\t") for path in sorted(out.glob("*/marks.tsv"))], ignore_index=True)
    table["first_stage_minutes"] = table.get("first_stage_minutes", pd.Series(0.0, index=table.index)).fillna(0.0)
    with atomic_path(out / "dice.tsv", overwrite=True) as temporary:
        table.to_csv(temporary, sep="\t", index=False)
    tissues = list(TISSUE_ORDER)
    shown = table[["recipe", "mode", "seed", "mark_minutes", "iteration", "first_stage_minutes", "training_minutes", "mean_dice", *tissues]]
    print(f"\nMean Dice of the held-out CRL ages on their own grids, {describe_device('cpu')}\n")
    print(shown.sort_values(["mode", "recipe", "seed", "iteration"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    means = table.groupby(["mode", "recipe", "iteration"]).agg(
        training_minutes=("training_minutes", "mean"),
        mean=("mean_dice", "mean"),
        min=("mean_dice", "min"),
        max=("mean_dice", "max"),
        seeds=("seed", "count"),
    )
    print("\nOver seeds (training minutes: their mean):\n")
    print(means.to_string(float_format=lambda v: f"{v:.3f}"))
    figure = plot(table)
    save_figure(figure, args.figure)
    plt.close(figure)


if __name__ == "__main__":
    main()
