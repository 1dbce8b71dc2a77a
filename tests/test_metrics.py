import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scans import ellipsoid, label_folders

from fss.cli import main
from fss.labels import TISSUE_ORDER
from fss.metrics import (
    SCORE_COLUMNS,
    brain_turn_degrees,
    dice,
    hausdorff95,
    labelled_outside_image,
    mean_over_cases,
    score_label_maps,
    summarize,
    tissue_volumes,
    volume_similarity,
    with_tissue_means,
)
from fss.stress import turn_anatomy


def brute_force_hd95(a, b, spacing):
    """Pairwise distances between all surface voxels: the definition, written independently."""

    def surface(mask):
        points = []
        for index in np.argwhere(mask):
            neighbours = [tuple(index + offset) for offset in np.eye(3, dtype=int).tolist() + (-np.eye(3, dtype=int)).tolist()]
            if any(min(n) < 0 or any(c >= s for c, s in zip(n, mask.shape)) or not mask[n] for n in neighbours):
                points.append(index)
        return np.array(points) * np.asarray(spacing)

    pa, pb = surface(a), surface(b)
    distances = np.linalg.norm(pa[:, None] - pb[None], axis=-1)
    return max(np.percentile(distances.min(1), 95), np.percentile(distances.min(0), 95))


def test_overlap_and_volume_on_known_cubes():
    a = np.zeros((20, 20, 20), bool)
    b = a.copy()
    a[5:15, 5:15, 5:15] = True
    b[5:15, 5:15, 7:17] = True
    assert dice(a, b) == pytest.approx(0.8)
    c = a.copy()
    c[5:15, 5:15, 13:15] = False
    assert volume_similarity(a, c) == pytest.approx(1 - 200 / 1800)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 0.8, 3.0)])
def test_hd95_matches_the_definition_with_anisotropic_spacing(spacing):
    rng = np.random.default_rng(0)
    a = np.zeros((14, 12, 10), bool)
    b = a.copy()
    a[3:10, 2:9, 2:7] = True
    b[4:11, 3:9, 3:8] = True
    b[rng.random(b.shape) < 0.02] = True
    assert hausdorff95(a, b, spacing) == pytest.approx(brute_force_hd95(a, b, spacing))
    shifted = np.roll(a, 2, axis=2)
    assert hausdorff95(a, shifted, spacing) == pytest.approx(2 * spacing[2])


def test_empty_labels_follow_the_documented_convention():
    empty, full = np.zeros((5, 5, 5), bool), np.zeros((5, 5, 5), bool)
    full[1:3, 1:3, 1:3] = True
    assert all(np.isnan(f(empty, empty)) for f in (dice, volume_similarity))
    assert np.isnan(hausdorff95(empty, empty, (1, 1, 1)))
    assert dice(full, empty) == 0 and volume_similarity(full, empty) == 0
    assert hausdorff95(full, empty, (1, 1, 1)) == np.inf


@pytest.mark.parametrize("metric", [dice, volume_similarity, lambda p, r: hausdorff95(p, r, (1, 1, 1))])
def test_masks_of_two_shapes_or_label_maps_are_refused_not_broadcast(metric):
    a = np.zeros((6, 6, 6), bool)
    a[1:5, 1:5, 1:5] = True
    with pytest.raises(ValueError, match="differ in shape"):
        metric(a, a[:, :, 3:4])  # would broadcast to a Dice of 1.6
    with pytest.raises(ValueError, match="boolean mask"):
        metric(np.full((4, 4, 4), 2), np.full((4, 4, 4), 3))  # two different labels, each non-zero everywhere


def test_tidy_table_and_summary(tmp_path):
    reference = np.zeros((16, 16, 16), np.int16)
    reference[2:14, 2:14, 2:14] = 1
    reference[4:12, 4:12, 4:12] = 3
    prediction = reference.copy()
    prediction[4:6, 4:12, 4:12] = 1
    affine = np.diag([0.8, 0.8, 1.6, 1])
    paths = []
    for name, data in (("pred.nii.gz", prediction), ("ref.nii.gz", reference)):
        nib.save(nib.Nifti1Image(data, affine), tmp_path / name)
        paths.append(tmp_path / name)
    table = score_label_maps([paths[0]], [paths[1]], names=["case"])
    assert list(table.columns) == SCORE_COLUMNS and len(table) == 7 * 3
    wm = table[(table.tissue == "WM") & (table.metric == "dice")].value.item()
    assert wm == pytest.approx(2 * 6 * 64 / (6 * 64 + 8 * 64))
    summary = summarize(table)
    assert summary.loc["WM", "dice"] == pytest.approx(wm) and np.isnan(summary.loc["BS", "dice"])
    with pytest.raises(ValueError, match="different affines"):
        nib.save(nib.Nifti1Image(reference, np.eye(4)), tmp_path / "other.nii.gz")
        score_label_maps([paths[0]], [tmp_path / "other.nii.gz"])


def test_scoring_label_maps_refuses_arrays_and_a_wrong_number_of_names_naming_the_argument():
    labels = np.zeros((8, 8, 8), np.int16)
    labels[2:6, 2:6, 2:6] = 3
    image = nib.Nifti1Image(labels, np.eye(4))
    with pytest.raises(TypeError, match=r"^predictions\[1\]: expected the path of a NIfTI file or a nibabel image, got ndarray"):
        score_label_maps([image, labels], [image, image])
    with pytest.raises(TypeError, match=r"^references\[0\]: .* got ndarray"):
        score_label_maps([image], [labels])
    with pytest.raises(ValueError, match="^names: 1 names for 2 predictions"):
        score_label_maps([image, image], [image, image], names=["x"])
    assert set(score_label_maps([image, image], [image, image], names=["x", "y"]).case) == {"x", "y"}


def test_cli_writes_the_table_and_refuses_to_overwrite(tmp_path, capsys):
    label_folders(tmp_path)
    out = tmp_path / "metrics.tsv"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 image(s)" in printed and "GM" in printed
    table = pd.read_csv(out, sep="\t")
    assert table[(table.tissue == "GM") & (table.metric == "dice")].value.item() == 1.0
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_tissue_volumes_count_each_tissue_in_mm3_and_refuse_maps_they_would_miscount():
    labels = np.zeros((4, 5, 6), np.int16)
    labels[0, :2] = 1  # 12 voxels of eCSF
    labels[1:3, :] = 3  # 60 voxels of white matter
    volumes = tissue_volumes(nib.Nifti1Image(labels, np.diag([0.5, 1.0, 2.0, 1.0])))
    assert volumes["eCSF_mm3"] == 12.0 and volumes["WM_mm3"] == 60.0 and volumes["brain_mm3"] == 60.0
    for bad, reason in (
        (np.full((4, 5, 6), 8, np.int16), "not FeTA tissues"),
        (np.full((4, 5, 6), 2.7, np.float32), "fractional"),
        (np.stack([labels, labels], axis=-1), "3-D"),
    ):
        with pytest.raises(ValueError, match=reason):
            tissue_volumes(nib.Nifti1Image(bad, np.eye(4)))


def test_the_share_labelled_outside_the_image_counts_labels_where_the_image_is_zero():
    image = np.zeros((4, 4, 4), np.float32)
    image[1:3, 1:3, 1:3] = 5.0  # 8 voxels of scan in a zero background
    prediction = np.zeros((4, 4, 4), np.int16)
    prediction[1:3, 1:3, 1:3] = 3
    prediction[0, 0, :2] = 1  # 2 voxels of tissue painted into the background
    assert labelled_outside_image(prediction, image) == pytest.approx(2 / 10)
    assert np.isnan(labelled_outside_image(np.zeros_like(prediction), image))
    with pytest.raises(ValueError, match="differ in shape"):
        labelled_outside_image(prediction, image[:3])


def test_the_brains_turn_is_read_from_its_shape_on_any_voxel_order():
    upright = ellipsoid()
    assert brain_turn_degrees(upright) < 1
    for degrees, axis in ((30, 0), (50, 1), (75, 2)):
        turned = turn_anatomy(upright, degrees, axis, mode="nearest")
        assert abs(brain_turn_degrees(turned) - degrees) < 2, (degrees, axis)
        flipped = turned.as_reoriented([[2, -1], [0, 1], [1, 1]])  # the same voxels in another order: the angle stays
        assert abs(brain_turn_degrees(flipped) - brain_turn_degrees(turned)) < 1e-6
    assert np.isnan(brain_turn_degrees(ellipsoid((30, 31, 29))))  # nearly round: no axes to read
    assert np.isnan(brain_turn_degrees(ellipsoid(value=1)))  # extra-axial CSF only: no brain


def test_the_one_reduction_averages_each_cases_mean_skipping_nan_and_keeping_an_infinite_hd95():
    rows = [
        ("a", "WM", "dice", 0.9),
        ("a", "GM", "dice", 0.5),
        ("a", "BS", "dice", np.nan),  # absent from both maps: skipped
        ("b", "WM", "dice", 0.7),
        ("b", "GM", "dice", 0.1),
        ("b", "BS", "dice", 0.4),
        ("a", "WM", "hd95", 1.0),
        ("b", "WM", "hd95", np.inf),  # missed: the mean stays infinite
    ]
    table = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    means = mean_over_cases(table).set_index(["metric", "tissue"]).value
    assert means["dice", "WM"] == pytest.approx(0.8) and means["dice", "BS"] == pytest.approx(0.4)
    # the cases' means (0.7 and 0.4), averaged: not the tissues' means averaged (0.8, 0.3, 0.4 -> 0.5)
    assert means["dice", "mean"] == pytest.approx(0.55)
    assert np.isinf(means["hd95", "WM"]) and np.isinf(means["hd95", "mean"])
    summary = summarize(table)
    assert summary.loc["mean", "dice"] == pytest.approx(0.55) and np.isinf(summary.loc["mean", "hd95"])
    assert list(summary.index) == [*TISSUE_ORDER, "mean"]
    per_case = with_tissue_means(with_tissue_means(table))  # made again, not added twice
    assert per_case[(per_case.tissue == "mean") & (per_case.metric == "dice")].value.tolist() == pytest.approx([0.7, 0.4])
