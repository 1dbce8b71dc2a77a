"""The model card's evaluation tables are what tools/evaluation_tables.py prints from the committed evaluation."""

import importlib.util
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("evaluation_tables", ROOT / "tools" / "evaluation_tables.py")
evaluation_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evaluation_tables)


def pipe_tables(text: str) -> list[str]:
    """The markdown pipe tables of ``text``: runs of consecutive lines that start with ``|``."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current))
            current = []
    return tables


def test_the_model_cards_evaluation_tables_are_printed_from_the_committed_evaluation(capsys):
    evaluation_tables.main([str(ROOT / "evaluation")])
    printed = capsys.readouterr().out
    card = (ROOT / "MODEL_CARD.md").read_text()
    evaluation = card[card.index("\n## Evaluation") : card.index("\n## Reproduce")]
    shown = pipe_tables(evaluation)
    assert len(shown) >= 6  # side by side, Dice and HD95 of each model, the shifts
    assert set(shown) <= set(pipe_tables(printed))
    [clean] = [line for line in printed.splitlines() if line.startswith("clean images of the same ages:")]
    assert clean in evaluation
    turned = pd.read_csv(ROOT / "evaluation" / "turned.tsv", sep="\t").groupby(["model", "degrees"]).agreement.mean()
    prose = " ".join(evaluation.split())
    for model in turned.index.unique("model"):
        first, second, third = (f"{value:.3f}" for value in turned[model])  # 5, 10 and 15 degrees
        assert f"{first}, {second} and {third} for `{model}`" in prose
