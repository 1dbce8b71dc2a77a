"""The tables that the model card and the README take from an evaluation run."""

import importlib.util
from pathlib import Path

import pandas as pd

from fss.labels import TISSUE_ORDER

spec = importlib.util.spec_from_file_location("evaluation_tables", Path(__file__).parents[1] / "tools" / "evaluation_tables.py")
evaluation_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evaluation_tables)

TISSUES = list(TISSUE_ORDER)


def results() -> pd.DataFrame:
    """Two models, two held-out ages (one of them stressed at severities 1 and 3), Dice only."""
    rows = []
    for model, clean, contrast in (("synthetic", 0.8, (0.79, 0.75)), ("real", 0.9, (0.7, 0.4))):
        for age in ("crl-GA27", "crl-GA31"):
            score = clean + (0.02 if age == "crl-GA31" else 0.0)
            rows += [(model, "CRL (held out)", age, t, "dice", score) for t in TISSUES]
        for severity, score in zip((1, 3), contrast):
            rows += [(model, "stress: contrast", f"crl-GA31 severity {severity}", t, "dice", score) for t in TISSUES]
    return pd.DataFrame(rows, columns=["model", "dataset", "case", "tissue", "metric", "value"])


def test_drops_are_measured_from_the_clean_images_of_the_stressed_ages():
    table = evaluation_tables.stress_table(results(), ["synthetic", "real"])
    assert "clean images of the same ages: synthetic 0.820 real 0.920" in table  # crl-GA31 only, not the mean of both ages
    assert "| contrast | 3 | 0.750 | 0.070 | 0.400 | 0.520 |" in table


def test_side_by_side_takes_the_highest_severity_and_the_difference():
    table = evaluation_tables.comparison_table(results(), ["synthetic", "real"])
    assert "| contrast 3 | 0.750 | 0.400 | 0.350 |" in table and "contrast 1" not in table
    assert "| CRL (held out) | 0.810 | 0.910 | -0.100 |" in table
