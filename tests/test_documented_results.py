"""The results that the model card and the README quote are what the committed result files give: the packaged
models' evaluation (evaluation/, printed by tools/evaluation_tables.py) and the subclasses ablation's Dice per seed."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from fss.experiments import spread_over_seeds

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


def test_the_model_cards_training_runs_are_printed_from_the_shipped_logs():
    lines = evaluation_tables.training_lines(ROOT / "evaluation" / "training")
    assert len(lines) == 4  # both stages of both models
    card = " ".join((ROOT / "MODEL_CARD.md").read_text().split())
    for line in lines:
        assert line in card, line


def test_the_readmes_comparison_of_the_packaged_models_is_the_committed_evaluation():
    results = evaluation_tables.with_stress(pd.read_csv(ROOT / "evaluation" / "metrics.tsv", sep="\t"))
    dice = results[results.metric == "dice"]
    where = dice.dataset.where(dice.kind.isna(), dice.kind + " " + dice.severity.astype("Int64").astype(str))
    means = dice.assign(where=where).groupby(["where", "model"]).value.mean()
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## What synthetic training buys") : readme.index("## An ablation")]
    header, rule, *rows = [line for line in section.splitlines() if line.startswith("|")]
    assert header == "| images | `fss-real-cpu` (real images) | `fss-synth-cpu` (synthetic only) |"
    clinical = clinical_stacks_benchmark().summary(pd.read_csv(ROOT / "evaluation" / "clinical_stacks.tsv", sep="\t"))
    for model in ("fss-real-cpu", "fss-synth-cpu"):
        means.loc[("clinical-like stacks", model)] = clinical[(clinical.model == model) & (clinical["slices mm"] == "all")]["mean Dice"].item()
    places = {
        "CRL atlas": ["CRL (held out)"],
        "Wu 2021 atlas": ["Wu 2021, brain mask"],
        "clinical-like stacks": ["clinical-like stacks"],
        "another contrast": ["contrast 3"],
        "low-field-like": ["low_field 3"],
        "residual motion": ["motion 3"],
        "bias field / Rician noise / 4.5 mm slices": ["bias 3", "noise 3", "thick_slices 3"],
    }
    assert len(rows) == len(places)
    for row, (start, shown) in zip(rows, places.items()):
        images, real, synthetic = [cell.strip().strip("*") for cell in row.strip("|").split("|")]
        assert images.startswith(start), row
        for model, cell in (("fss-real-cpu", real), ("fss-synth-cpu", synthetic)):
            assert cell.replace("**", "") == " / ".join(f"{means[place, model]:.3f}" for place in shown), row


def test_the_readme_ablation_table_is_the_shipped_dice_per_seed():
    spread = spread_over_seeds(pd.read_csv(ROOT / "experiments" / "results" / "subclasses-cpu.tsv", sep="\t"))
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## An ablation: do intensity subclasses help?") : readme.index("## Measured speed")]
    header, rule, *rows = [line for line in section.splitlines() if line.startswith("|")]
    assert header == "| images | K = 1..4 (the method) | K = 1 |" and len(rows) >= 3
    for row in rows:
        where, *cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells == [f"{s['mean']:.3f} ({s['min']:.3f}-{s['max']:.3f})" for s in (spread.loc[(where, "K=1-4")], spread.loc[(where, "K=1")])], row
    assert spread["count"].min() >= 3  # seeds per arm and place


def clinical_stacks_benchmark():
    """The module of ``benchmarks/clinical_stacks.py``, which prints the clinical-like stacks' summary."""
    spec = importlib.util.spec_from_file_location("clinical_stacks", ROOT / "benchmarks" / "clinical_stacks.py")
    clinical_stacks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(clinical_stacks)
    return clinical_stacks


def test_the_model_cards_clinical_stacks_table_is_printed_from_the_shipped_scores():
    clinical_stacks = clinical_stacks_benchmark()
    table = pd.read_csv(ROOT / "evaluation" / "clinical_stacks.tsv", sep="\t")
    assert len(table) == 2 * 13 * 3 * 3  # two models, every Wu age, three thicknesses across three axes
    card = (ROOT / "MODEL_CARD.md").read_text()
    section = card[card.index("### Clinical-like stacks") : card.index("### What these numbers say")]
    assert clinical_stacks.summary(table).to_string(index=False) in section


def test_the_recipes_short_run_table_is_printed_from_the_shipped_scores():
    spec = importlib.util.spec_from_file_location("short_runs", ROOT / "benchmarks" / "short_runs.py")
    short_runs = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "benchmarks"))  # it imports clinical_stacks beside it
    try:
        spec.loader.exec_module(short_runs)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    table = pd.read_csv(ROOT / "evaluation" / "short_runs.tsv", sep="\t")
    assert len(table) == 4 * 2  # four generators, two seeds each
    assert short_runs.markdown(table) in (ROOT / "docs" / "recipes.md").read_text()


def test_the_model_cards_turned_brains_table_is_printed_from_the_shipped_scores():
    spec = importlib.util.spec_from_file_location("brain_orientation", ROOT / "benchmarks" / "brain_orientation.py")
    brain_orientation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(brain_orientation)
    table = pd.read_csv(ROOT / "evaluation" / "brain_orientation.tsv", sep="\t")
    assert len(table) == 2 * 4 * (1 + 5 * 3)  # two models, four Wu ages, unturned and five turns about each axis
    card = (ROOT / "MODEL_CARD.md").read_text()
    section = card[card.index("### Brains turned within the grid") : card.index("### Tissue where the image is zero")]
    assert brain_orientation.summary(table).to_string() in section


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("0*.ipynb")))
def test_every_notebook_opens_with_one_objective_and_closes_with_one_takeaway(notebook):
    cells = [c for c in json.loads((ROOT / "notebooks" / notebook).read_text())["cells"] if c["cell_type"] == "markdown"]
    texts = ["".join(c["source"]) for c in cells]
    assert [i for i, t in enumerate(texts) if "**Objective:**" in t] == [0]
    takeaways = [i for i, t in enumerate(texts) if t.startswith("## Takeaway")]
    assert len(takeaways) == 1 and all(t.startswith(("## Next", "Next:", "When you are done")) for t in texts[takeaways[0] + 1 :])


def test_notebook_05s_text_says_what_its_volume_table_shows():
    """The sentence after the growth curves quotes the committed table of segmented against known volumes."""
    cells = json.loads((ROOT / "notebooks" / "05_segment_your_scan.ipynb").read_text())["cells"]
    [printed] = ["".join(o["text"]) for c in cells if "difference_%" in "".join(c["source"]) for o in c["outputs"] if "text" in o]
    difference = {line.rsplit(None, 3)[0].strip(): float(line.split()[-1]) for line in printed.splitlines()[1:8]}
    texts = [" ".join("".join(c["source"]).split()) for c in cells if c["cell_type"] == "markdown"]
    [text] = [t for t in texts if "known labels, which lie on the CRL curve" in t]
    low, high = (int(n) for n in re.search(r"cerebellum come out (\d+)-(\d+) % smaller", text).groups())
    for tissue in ("extra-axial cerebrospinal fluid", "white matter", "cerebellum"):
        assert low <= round(-difference[tissue]) <= high, tissue
    assert abs(difference["cortical grey matter"]) <= int(re.search(r"cortex within (\d+) %", text).group(1))
    low, high = (int(n) for n in re.search(r"deep grey matter by (\d+)-(\d+) %", text).groups())
    assert all(low <= round(difference[t]) <= high for t in ("ventricles", "deep grey matter"))
    assert round(difference["brainstem"]) == int(re.search(r"the brainstem by (\d+) %", text).group(1))
