"""The notebooks run again with the parameters that a reader is told to change, at a tiny size.

nbval re-executes every notebook at its defaults and compares the text of its outputs; these
tests catch what that cannot: a parameter that is ignored or overridden, and a key figure that
changed while its ``<Figure size ...>`` line did not (the picture a cell shows, compared
tolerantly with the one the committed notebook shows: same size, same mean colour in every tile).
"""

import base64
import io
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import papermill
import pytest

from fss.checkpoint import load_checkpoint

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"

pytestmark = pytest.mark.slow


def run(notebook: str, output: Path, **parameters) -> dict:
    """Execute ``notebook`` with ``parameters`` (``output_dir`` set to ``output``); the executed notebook."""
    output.mkdir(parents=True, exist_ok=True)
    executed = output / notebook
    papermill.execute_notebook(
        NOTEBOOKS / notebook,
        executed,
        parameters={**parameters, "output_dir": str(output)},
        cwd=str(NOTEBOOKS),
        progress_bar=False,
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
    )
    return json.loads(executed.read_text())


def outputs_of(notebook: dict, source: str) -> list[dict]:
    """The outputs of the one code cell of ``notebook`` whose source contains ``source``."""
    [cell] = [c for c in notebook["cells"] if c["cell_type"] == "code" and source in "".join(c["source"])]
    return cell["outputs"]


def printed(notebook: dict, source: str) -> str:
    """What that cell printed."""
    return "".join("".join(o["text"]) for o in outputs_of(notebook, source) if o["output_type"] == "stream")


def committed(notebook: str) -> dict:
    return json.loads((NOTEBOOKS / notebook).read_text())


def picture(notebook: dict, source: str) -> np.ndarray:
    """The picture (PNG or JPEG) that the cell whose source contains ``source`` shows: (H, W, C) in [0, 1]."""
    [(kind, data)] = [
        (kind, o["data"][f"image/{kind}"]) for o in outputs_of(notebook, source) for kind in ("png", "jpeg") if f"image/{kind}" in o.get("data", {})
    ]
    pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(data)), format=kind)
    return pixels / 255.0 if pixels.dtype == np.uint8 else pixels


def assert_same_picture(found: np.ndarray, expected: np.ndarray, tiles: int = 6, tolerance: float = 0.02) -> None:
    """Same size, and the mean colour of each of ``tiles`` x ``tiles`` tiles within ``tolerance``."""
    assert found.shape == expected.shape

    def means(picture):
        rows, columns = (np.array_split(np.arange(n), tiles) for n in picture.shape[:2])
        return np.array([[picture[np.ix_(r, c)][..., :3].mean(axis=(0, 1)) for c in columns] for r in rows])

    difference = np.abs(means(found) - means(expected))
    assert difference.max() < tolerance, f"tile colours differ by up to {difference.max():.3f}"


def test_assert_same_picture_notices_a_changed_panel():
    picture = np.random.default_rng(0).random((120, 180, 4))
    assert_same_picture(picture.copy(), picture)
    changed = picture.copy()
    changed[:20, :30, :3] = 0  # one tile goes black
    with pytest.raises(AssertionError, match="tile colours differ"):
        assert_same_picture(changed, picture)


def test_setup_at_a_coarser_spacing_keeps_the_volumes_and_the_figure(tmp_path):
    executed = run("00_setup.ipynb", tmp_path, spacing_mm=1.6)
    assert "working shape: (67, 94, 77)" in printed(executed, "grid = WorkingGrid")  # half the voxels along each axis
    # volumes are counted on the atlas's own 0.8 mm grid, whatever the working spacing
    assert printed(executed, "tissue_volumes(") == printed(committed("00_setup.ipynb"), "tissue_volumes(")
    volumes = pd.read_csv(tmp_path / "volumes.csv").set_index("short").volume_ml
    assert 280 < volumes.sum() < 286 and 185 < volumes.drop("eCSF").sum() < 191  # ml at 30 weeks
    assert_same_picture(picture(executed, "crl_GA"), picture(committed("00_setup.ipynb"), "crl_GA"))


def test_training_takes_the_configuration_and_mode_it_is_given(tmp_path):
    run("03_training.ipynb", tmp_path, config_name="cpu-model", mode="real", iterations=6, validation_ages=[31])
    summary = json.loads((tmp_path / "summary.json").read_text())
    _, metadata = load_checkpoint(summary["checkpoint"], "cpu")
    training = metadata["training"]
    assert training["mode"] == "real" and training["iterations"] == 6 and training["validation_ages"] == [31]
    # cpu-model's own network, crops and spacing, not the demonstration's
    assert training["crop_shape"] == [48, 64, 48] and training["channels"] == [8, 32, 64, 128] and training["skip"] == "add"
    assert training["spacing"] == 1.6
    assert summary["metrics"]["mode"] == "real" and summary["metrics"]["iterations"] == 6
    assert 0 <= summary["metrics"]["final_mean_dice"] <= 1


def test_evaluation_compares_the_models_it_is_given(tmp_path):
    executed = run(
        "04_evaluation.ipynb",
        tmp_path,
        models=["fss-synth-cpu"],
        crl_ages=[31],
        wu_ages=[30],
        clinical_ages=[],
        stress_ages=[31],
        severities=[3],
        turn_degrees=[],
        turned_brain_degrees=[],
    )
    results = pd.read_csv(tmp_path / "metrics.tsv", sep="\t")
    assert set(results.model) == {"fss-synth-cpu"}
    dice = results[results.metric == "dice"].groupby("dataset").value.mean()
    assert dice.filter(like="CRL").iloc[0] > 0.7  # the packaged model on a held-out atlas age
    assert {"stress: contrast", "stress: motion", "stress: low_field"} <= {d for d in dice.index if d.startswith("stress")}
    # the same shifts of the same age as the committed run
    for part in ("stresses_1.png", "stresses_2.png"):
        assert_same_picture(picture(executed, part), picture(committed("04_evaluation.ipynb"), part))


def test_segmenting_without_the_flipped_average_changes_the_demo_scans_dice_little(tmp_path):
    """Notebook 05's first exercise: ``tta = False`` changes the mean Dice against the known labels by little."""

    def mean_dice(notebook: dict) -> float:
        return float(printed(notebook, "dice_per_tissue(").split("| mean")[1])

    without = mean_dice(run("05_segment_your_scan.ipynb", tmp_path, tta=False))
    with_flips = mean_dice(committed("05_segment_your_scan.ipynb"))
    assert abs(without - with_flips) < 0.01, (without, with_flips)  # that the flips are averaged at all: tests/test_infer.py
