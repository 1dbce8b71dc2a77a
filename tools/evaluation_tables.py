"""Markdown tables for the model card and the README from an evaluation run of notebook 04.

Reads the ``metrics.tsv`` (and ``turned.tsv``) that notebook 04 writes to its ``output_dir`` and
prints, per model: Dice per tissue and mean HD95 on each clean dataset; the mean Dice of each
stress at each severity with its drop from the clean images of the same ages; and, for two or
more models, the side-by-side comparison. Every number in those documents is printed here.

With a ``training/`` folder beside them (each training run's ``log.csv``, named after the run), it
also prints each run's training seconds, cost per iteration and validation Dice.

Run: python tools/evaluation_tables.py evaluation   (the packaged models' evaluation, committed)
     python tools/evaluation_tables.py outputs/04_evaluation_full   (a run of the notebook)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from fss.evaluation import CLEAN_DATASETS, drops_from_clean, tissue_table, with_stress_columns
from fss.metrics import mean_over_cases


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table of ``table`` (index as the first columns), numbers rounded to ``digits``."""
    table = table.reset_index()
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    rows = ["| " + " | ".join(f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def with_stress(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with ``kind`` and ``severity`` columns (empty for clean datasets) and the ``age`` of each case."""
    marked = with_stress_columns(results)
    return marked.assign(kind=marked.stress, age=results.case.str.extract(r"(crl-GA\d+|wu-GA\d+)")[0])


def clean_tables(results: pd.DataFrame, model: str) -> tuple[str, str]:
    """Dice per tissue with its mean, and HD95 per tissue with its mean, per clean dataset (:func:`fss.evaluation.tissue_table`)."""
    tables = []
    for metric, digits in (("dice", 3), ("hd95", 2)):
        chosen = results[(results.model == model) & results.dataset.isin(CLEAN_DATASETS)]
        table = tissue_table(chosen, ["dataset"], metric)
        tables.append(markdown(table.reindex([d for d in CLEAN_DATASETS if d in table.index]), digits))
    return tables[0], tables[1]


def stress_table(results: pd.DataFrame, models: list[str]) -> str:
    """Mean Dice per stress and severity for each model, and its drop from the clean images of the same ages."""
    clean, stressed = drops_from_clean(results)
    means = stressed.unstack("model")[models].rename_axis(["kind", "severity"])
    table = pd.DataFrame(index=means.index)
    for model in models:
        table[f"{model} Dice"] = means[model]
        table[f"{model} drop"] = clean[model] - means[model]
    clean_row = " ".join(f"{model} {clean[model]:.3f}" for model in models)
    return f"clean images of the same ages: {clean_row}\n\n" + markdown(table)


def comparison_table(results: pd.DataFrame, models: list[str]) -> str:
    """Mean Dice of each model on every clean dataset and every stress at its highest severity, and the difference."""
    dice = with_stress(results[results.metric == "dice"])
    top = dice[dice.kind.isna() | (dice.severity == dice.groupby("kind").severity.transform("max"))]
    where = top.dataset.where(top.kind.isna(), top.kind + " " + top.severity.astype("Int64").astype(str))
    means = mean_over_cases(top.assign(where=where), by=["where", "model"])
    table = means[means.tissue == "mean"].set_index(["where", "model"]).value.unstack("model").sort_index()[models]
    table.index.name = "images"
    if len(models) == 2:
        table[f"{models[0]} - {models[1]}"] = table[models[0]] - table[models[1]]
    return markdown(table)


def training_lines(folder: Path) -> list[str]:
    """Per training log ``folder/*.csv``: iterations, training seconds and seconds per iteration, and the mean
    validation Dice at each validation (a run stopped with ``--until`` validates where it stopped, too)."""
    lines = []
    for log_path in sorted(folder.glob("*.csv")):
        log = pd.read_csv(log_path)
        validations = log.dropna(subset=["mean_dice"])
        iterations, seconds = int(log.iteration.iloc[-1]), float(log.seconds.iloc[-1])
        lines.append(
            f"{log_path.stem}: {iterations} iterations in {seconds:.0f} s ({seconds / iterations:.2f} s each); "
            "validation Dice (iteration: mean) "
            + ", ".join(f"{iteration}: {value:.3f}" for iteration, value in zip(validations.iteration, validations.mean_dice))
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="output_dir of a notebook 04 run, or evaluation/ (the packaged models' committed evaluation)")
    args = parser.parse_args(argv)
    results = pd.read_csv(args.folder / "metrics.tsv", sep="\t")
    models = list(dict.fromkeys(results.model))
    for model in models:
        dice, hd95 = clean_tables(results, model)
        print(f"## {model}\n\nDice:\n\n{dice}\n\nHD95 (mm):\n\n{hd95}\n")
    print(f"## Stresses (mean Dice over the stressed ages)\n\n{stress_table(results, models)}\n")
    print(f"## Side by side\n\n{comparison_table(results, models)}\n")
    turned = args.folder / "turned.tsv"
    if turned.exists():
        agreement = pd.read_csv(turned, sep="\t").pivot_table(index=["degrees"], columns="model", values="agreement", aggfunc="mean")
        print(f"## Turned copies (mean agreement over the three axes)\n\n{markdown(agreement)}\n")
    if (args.folder / "training").is_dir():
        print("## Training runs\n\n" + "\n".join(training_lines(args.folder / "training")))


if __name__ == "__main__":
    main()
