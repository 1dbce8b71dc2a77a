import json
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fss.labels import TISSUE_ORDER
from fss.metrics import VOLUME_COLUMNS
from fss.notebook import PROJECTION_VARIABLE, figure_png, projection_wanted
from fss.stress import stress_views
from fss.viz import (
    FETA_COLORS,
    READABLE_TEXT_PX,
    SMALLEST_TEXT_KEY,
    figure_style,
    plot_comparison,
    plot_dice_against_severity,
    plot_domain_randomization,
    plot_experiment,
    plot_growth_curves,
    plot_planes,
    plot_stresses,
    smallest_text_pixels,
    view_segmentation,
)

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.ipynb"))


def test_comparison_rows_share_their_slices_and_mark_left_and_right():
    image = np.random.default_rng(0).random((20, 24, 16))
    reference = np.zeros(image.shape, np.int16)
    reference[4:10, 6:20, 3:9] = 3
    prediction = np.zeros(image.shape, np.int16)
    prediction[12:18, 2:8, 8:14] = 2  # elsewhere: the rows must still show the reference's slices
    figure = plot_comparison(image, {"reference": reference, "prediction": prediction})
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:3] == ["reference: sagittal 6", "reference: coronal 12", "reference: axial 6"]  # the centre of the first map
    assert [t.split(": ")[1] for t in titles[3:]] == [t.split(": ")[1] for t in titles[:3]]
    letters = [[text.get_text() for text in ax.texts] for ax in figure.axes]
    assert letters[0] == [] and letters[1] == letters[2] == ["L", "R"]  # the sagittal view has no left and right
    assert sorted(t.get_text() for t in figure.legends[0].get_texts()) == ["GM", "WM"]
    with pytest.raises(ValueError, match="prediction"):
        plot_comparison(image, {"prediction": prediction[:10]})
    assert len(plot_planes(image).axes) == 3


def test_viewer_page_shows_the_scan_with_its_labels_and_refuses_unknown_values(tmp_path):
    affine = np.diag([0.9, 0.9, 2.2, 1.0])
    affine[:3, :3] = affine[:3, :3] @ np.array([[0.96, -0.28, 0], [0.28, 0.96, 0], [0, 0, 1]])  # oblique, like a scanner's frame
    image = nib.Nifti1Image(np.random.default_rng(0).random((24, 20, 10)).astype(np.float32), affine)
    values = np.zeros(image.shape, np.int16)
    values[6:18, 5:15, 2:8] = 3
    values[10:14, 8:12, 4:6] = 7
    page = view_segmentation(image, nib.Nifti1Image(values, affine), title="a scan")
    page.save_as_html(tmp_path / "viewer.html")
    text = (tmp_path / "viewer.html").read_text()
    assert "a scan" in text and "brainsprite" in text.lower()
    values[0, 0, 0] = 9
    with pytest.raises(ValueError, match=r"no colour for label values \[9\]"):
        view_segmentation(image, nib.Nifti1Image(values, affine))


def test_experiment_figure_has_a_panel_per_tissue_and_each_stress_at_its_highest_severity():
    rows = [
        {"where": where, "stress": stress, "severity": severity, "arm": arm, "seed": seed, "tissue": tissue, "value": 0.5}
        for where, stress, severity in (("CRL (held out)", None, None), ("noise 1", "noise", 1), ("noise 3", "noise", 3), ("bias 2", "bias", 2))
        for arm in ("K=1-4", "K=1")
        for seed in (0, 1)
        for tissue in ("mean", "WM", "eCSF")
    ]
    figure = plot_experiment(pd.DataFrame(rows), "subclasses")
    shown = [ax for ax in figure.axes if ax.axison]
    assert [ax.get_title() for ax in shown] == ["mean of the tissues", "eCSF", "WM"]  # FeTA order after the mean
    assert [t.get_text() for t in shown[0].get_xticklabels()] == ["CRL (held out)", "noise 3", "bias 2"]
    assert shown[0].get_ylim() == (0, 1) and [t.get_text() for t in shown[0].get_legend().get_texts()] == ["K=1-4", "K=1"]
    assert len(shown[1].lines) == 2 * 3 * 2  # per arm and place: the dots of the seeds and the bar of their mean


def test_growth_curves_have_a_panel_per_tissue_and_the_brain_with_the_scan_at_its_age_and_the_legend_off_the_data():
    ages = [22, 24, 26]
    rows = [
        {"atlas": atlas, "age": age, **{c: 1000.0 * (age + k + offset) for k, c in enumerate(VOLUME_COLUMNS)}}
        for atlas, offset in (("A", 0), ("B", 2))
        for age in ages
    ]
    volumes = {c: 1000.0 * (30 + k) for k, c in enumerate(VOLUME_COLUMNS)}  # mm^3
    figure = plot_growth_curves(pd.DataFrame(rows), 25, volumes)
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [*TISSUE_ORDER, "brain"]
    for k, ax in enumerate(panels):
        dot = next(line for line in ax.get_lines() if line.get_label() == "this scan")
        assert dot.get_xdata().tolist() == [25] and dot.get_ydata().tolist() == [30 + k]  # ml
    assert not any(ax.get_legend() for ax in figure.axes) and len(figure.legends) == 1  # one legend, below the panels
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["between the atlases", "A", "B", "this scan"]
    plt.close(figure)


def test_smallest_text_is_the_smallest_drawn_font_and_shrinks_with_a_figure_wider_than_the_page():
    with plt.rc_context(figure_style()):
        figure, ax = plt.subplots(figsize=(5, 3))
        ax.set_title("title", fontsize=20)
        ax.tick_params(labelsize=9)
        ax.set_xlim(0, 1)
        ax.text(5, 5, "outside the axes and the figure", fontsize=2)  # not drawn where anyone sees it
        assert smallest_text_pixels(figure) == pytest.approx(9 * 100 / 72)
        figure.set_figwidth(20)  # 2000 pixels, shown 1000 wide
        assert smallest_text_pixels(figure) == pytest.approx(9 * 100 / 72 / 2)
    plt.close(figure)


def test_projection_style_enlarges_every_relative_font_size():
    sizes = {}
    for projection in (False, True):
        with plt.rc_context(figure_style(projection)):
            figure = plot_planes(np.random.default_rng(0).random((8, 9, 10)), title="t")
            sizes[projection] = smallest_text_pixels(figure)
            plt.close(figure)
    assert sizes[True] == pytest.approx(sizes[False] * 1.4)


def test_figure_png_is_a_png_that_records_its_smallest_text():
    with plt.rc_context(figure_style()):
        figure, ax = plt.subplots(figsize=(4, 3))
        ax.set_xlabel("x", fontsize=12)
        data, metadata = figure_png(figure)
    plt.close(figure)
    assert data.startswith(b"\x89PNG")
    assert metadata[SMALLEST_TEXT_KEY] == pytest.approx(round(10 * 100 / 72, 1))  # the tick labels at the base size


def test_one_variable_chooses_the_projector_style_for_every_notebook(monkeypatch):
    for value, wanted in (("", False), ("0", False), ("no", False), ("1", True), ("TRUE", True), ("yes", True)):
        monkeypatch.setenv(PROJECTION_VARIABLE, value)
        assert projection_wanted() is wanted
        assert projection_wanted(not wanted) is (not wanted)  # an explicit argument wins
    monkeypatch.delenv(PROJECTION_VARIABLE)
    assert projection_wanted() is False
    monkeypatch.setenv(PROJECTION_VARIABLE, "big")
    with pytest.raises(ValueError, match="FSS_PROJECTION='big': set it to 1"):
        projection_wanted()


def test_stress_views_show_each_kind_on_its_plane_clean_then_at_each_severity():
    image = np.random.default_rng(0).random((12, 14, 10)).astype(np.float32)
    views = stress_views(image, (1.0, 1.0, 1.0), ["noise", "thick_slices"], seed=3)
    assert [title for title, _ in views["noise"]][0] == "clean" and views["noise"][1][0].startswith("1: ")
    np.testing.assert_array_equal(views["noise"][0][1], np.rot90(image[:, :, 5]))  # axial, anterior up
    np.testing.assert_array_equal(views["thick_slices"][0][1], np.rot90(image[:, 7, :]))  # across slices: coronal
    assert all(len(panels) == 4 for panels in views.values())
    assert all(picture.flags.owndata for panels in views.values() for _, picture in panels)  # not views of whole volumes
    figure = plot_stresses(views)
    assert figure.axes[1].get_title() == views["noise"][1][0] and figure.axes[4].get_ylabel() == "thick_slices"
    plt.close(figure)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_committed_notebooks_store_png_figures_whose_smallest_text_is_readable(path):
    figures = [
        output
        for cell in json.loads(path.read_text())["cells"]
        for output in cell.get("outputs", [])
        if any(kind.startswith("image/") for kind in output.get("data", {}))
    ]
    for output in figures:
        assert set(output["data"]) & {"image/jpeg", "image/svg+xml"} == set()
        assert output["metadata"]["image/png"][SMALLEST_TEXT_KEY] >= READABLE_TEXT_PX


def test_dice_against_severity_joins_only_neighbouring_severities_and_draws_a_reference_behind():
    clean = pd.Series({"a": 0.9, "b": 0.8})
    stressed = pd.Series({("a", "noise", 3): 0.5, ("b", "noise", 3): 0.7, ("a", "bias", 3): 0.85, ("b", "bias", 3): 0.75}).rename_axis(
        ["model", "stress", "severity"]
    )
    every = pd.Series({("a", "noise", s): 0.9 - 0.1 * s for s in (1, 2, 3)}).rename_axis(["model", "stress", "severity"])
    figure = plot_dice_against_severity(clean, stressed, reference=(clean, every), reference_name="shipped")
    noise, bias = figure.axes[:2]
    solid = [line for line in noise.get_lines() if line.get_linestyle() == "-"]
    dashed = [line for line in noise.get_lines() if line.get_linestyle() == "--"]
    assert not solid  # severities 0 and 3 only: nothing says how the Dice falls between them
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [0, 1, 2, 3] and dashed[0].get_color() == "C0"  # model a only
    assert not [line for line in bias.get_lines() if line.get_linestyle() == "--"]  # the reference has no bias
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["a, shipped", "a", "b"]
    plt.close(figure)


def test_domain_randomization_on_one_page_shows_the_label_map_the_draws_and_the_segmented_scan():
    labels = np.zeros((20, 24), np.int16)
    labels[4:16, 5:19] = 3
    synthetic = [np.full((20, 24), value) for value in np.linspace(0, 1, 6)]
    figure = plot_domain_randomization(labels, synthetic, np.random.default_rng(0).random((30, 30)), np.ones((30, 30), np.int16))
    assert len(figure.axes) == 1 + 6 + 2  # the label map, two rows of three draws, the scan without and with its labels
    assert [s._suptitle.get_text().split("\n")[0] for s in figure.subfigs] == [
        "one label map",
        "drawn again and again: random contrast,",
        "another population, segmented",
    ]
    assert [t.get_text() for t in figure.legends[0].get_texts()] == [name for name, _ in FETA_COLORS.values()]
    plt.close(figure)
