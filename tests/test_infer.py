import fnmatch
import json
import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from ball import CENTRE_MM, ball_image, ball_labels, ball_volume, tiny_config
from bidsschematools.rules import regexify_filename_rules
from bidsschematools.schema import load_schema
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from nibabel.processing import resample_from_to
from scans import bids, ellipsoid, scan
from scipy.spatial.transform import Rotation

import fss.infer
from fss.bids import find_t2w_images
from fss.checkpoint import CheckpointError, load_checkpoint
from fss.cli import main
from fss.infer import predict_working, segment
from fss.io import NORMALIZATION
from fss.metrics import dice
from fss.stress import turn_anatomy
from fss.train import train


def test_segment_lands_on_the_input_grid(checkpoint):
    image = scan()
    labels, probabilities = segment(image, checkpoint, device="cpu", tta=True)
    assert labels.shape == image.shape and np.allclose(labels.affine, image.affine)
    assert np.asarray(labels.dataobj).dtype == np.int16 and set(np.unique(labels.dataobj)) <= set(range(8))
    assert probabilities.shape == (8, *image.shape)
    torch.testing.assert_close(probabilities.sum(0), torch.ones(image.shape), atol=1e-4, rtol=0)
    np.testing.assert_array_equal(np.asarray(labels.dataobj), probabilities.argmax(0).numpy())


def test_sliding_window_puts_every_tile_back_in_its_place(checkpoint, monkeypatch):
    def voxelwise(model, x):  # a "network" whose output at a voxel depends on that voxel only
        return torch.softmax(torch.cat([x * k for k in range(8)], dim=1), dim=1)

    monkeypatch.setattr(fss.infer, "_forward", voxelwise)
    model, _ = load_checkpoint(checkpoint)
    volume = torch.rand(40, 36, 20)
    whole = predict_working(model, volume)
    for overlap in (0.0, 0.25, 0.5):
        windowed = predict_working(model, volume, window=16, overlap=overlap)
        torch.testing.assert_close(windowed, whole, atol=1e-5, rtol=0)


def test_a_window_and_overlap_that_would_run_for_hours_are_refused_before_any_window(checkpoint, monkeypatch):
    calls = []
    monkeypatch.setattr(fss.infer, "_forward", lambda model, x: calls.append(1) or torch.zeros(1, 8, *x.shape[2:]))
    model, _ = load_checkpoint(checkpoint)
    with pytest.raises(ValueError, match=r"window 16 with overlap 0.999 takes 117649 windows over the 64x64x64 working grid, which computes"):
        predict_working(model, torch.rand(64, 64, 64), window=16, overlap=0.999)
    assert not calls
    predict_working(model, torch.rand(64, 64, 64), window=16, overlap=0.75)  # each voxel 34 times: allowed
    assert len(calls) == 13**3


def test_a_field_far_larger_than_a_fetal_head_is_warned_of_with_its_work_before_any_window(checkpoint, monkeypatch):
    class BeforeAnyWindow(Exception):
        pass

    def no_window(*args, **kwargs):
        raise BeforeAnyWindow

    monkeypatch.setattr(fss.infer, "predict_working", no_window)
    data = np.random.default_rng(0).uniform(50, 100, (26, 30, 24)).astype(np.float32)
    huge = nib.Nifti1Image(data, np.diag([10.0, 10.0, 10.0, 1.0]))  # 10 mm voxels, inside the accepted range
    with pytest.warns(UserWarning, match=r"foreground spans 259 x 301 x 240 mm, more than any fetal head .* takes one pass of the network"):
        with pytest.raises(BeforeAnyWindow):
            segment(huge, checkpoint, device="cpu")  # 260 x 300 x 240 mm of voxel centres, on a grid of 1.6 mm
    with pytest.warns(UserWarning, match=r"takes 180 windows of 32x32x32 voxels"):
        with pytest.raises(BeforeAnyWindow):
            segment(huge, checkpoint, device="cpu", window=32, overlap=0.0)  # (5 + 1) x (5 + 1) x (4 + 1): steps of 32 and one flush with the end
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BeforeAnyWindow):
            segment(scan(), checkpoint, device="cpu")


def test_a_segmentation_with_a_brain_of_no_fetal_size_is_warned_of(checkpoint, monkeypatch):
    line = np.zeros((7, 204, 7), np.float32)
    line[2:5, 2:202, 2:5] = 100.0  # 3 x 200 x 3 voxels of 1 mm: 1.8 ml, however it is labelled
    with pytest.warns(UserWarning, match=r"holds [0-9.]+ ml of brain \(without the extra-axial CSF\), outside the 15-800 ml of any fetal brain"):
        segment(nib.Nifti1Image(line, np.eye(4)), checkpoint, device="cpu")

    def all_white_matter(model, image, *args, **kwargs):
        probabilities = torch.zeros(8, *image.shape)
        probabilities[3] = 1
        return probabilities

    monkeypatch.setattr(fss.infer, "predict_working", all_white_matter)
    brain = np.zeros((60, 60, 60), np.float32)
    brain[5:55, 5:55, 5:55] = 100.0  # 2 mm voxels: 1 l of white matter
    with pytest.warns(UserWarning, match=r"holds 1[0-9]{3}\.[0-9] ml of brain"):
        segment(nib.Nifti1Image(brain, np.diag([2.0, 2.0, 2.0, 1.0])), checkpoint, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 125 ml: a fetal brain's size
        segment(nib.Nifti1Image(brain, np.eye(4)), checkpoint, device="cpu")


def test_a_brain_turned_far_from_the_scans_axes_is_warned_of(checkpoint, monkeypatch):
    def white_matter_where_the_image_is(model, image, *args, **kwargs):
        probabilities = torch.zeros(8, *image.shape)
        probabilities[3] = image > 0
        probabilities[0] = 1 - probabilities[3]
        return probabilities

    monkeypatch.setattr(fss.infer, "predict_working", white_matter_where_the_image_is)
    upright = ellipsoid()
    upright = nib.Nifti1Image(np.asarray(upright.dataobj, np.float32) * 40, upright.affine)  # 109 ml: a fetal brain's size
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        segment(upright, checkpoint, device="cpu")
        segment(turn_anatomy(upright, 30.0, axis=0), checkpoint, device="cpu")  # within what the models cope with
    with pytest.warns(UserWarning, match=r"the segmented brain's axes lie about (5[5-9]|6[0-5]) degrees from the scan's: either the brain"):
        segment(turn_anatomy(upright, 60.0, axis=0), checkpoint, device="cpu")


def test_test_time_augmentation_averages_with_the_prediction_of_the_left_right_flipped_volume(checkpoint, monkeypatch):
    def ramp(model, x):  # class scores that grow along each axis at its own rate, so that every flip changes them
        d, h, w = x.shape[2:]
        position = torch.arange(d)[:, None, None] + 2 * torch.arange(h)[None, :, None] + 4 * torch.arange(w)[None, None, :]
        return torch.softmax(torch.stack([position * k / 20 for k in range(8)])[None].float() + 0 * x, dim=1)

    monkeypatch.setattr(fss.infer, "_forward", ramp)
    model, _ = load_checkpoint(checkpoint)
    volume = torch.rand(16, 12, 8)  # sides that are multiples of the model's: no padding
    plain = predict_working(model, volume)
    expected = (plain + plain.flip(1)) / 2  # (C, X, Y, Z): X is the left-right axis of the RAS+ working grid
    torch.testing.assert_close(predict_working(model, volume, tta=True), expected, atol=1e-6, rtol=0)
    assert not torch.allclose(expected, plain, atol=1e-3) and not torch.allclose(expected, (plain + plain.flip(2)) / 2, atol=1e-3)


def test_segment_scales_intensities_as_the_checkpoint_records(checkpoint):
    model, metadata = load_checkpoint(checkpoint)
    assert "normalization" not in metadata  # as checkpoints written outside fss.train
    image = scan()
    _, unrecorded = segment(image, (model, metadata), device="cpu")
    _, recorded = segment(image, (model, {**metadata, "normalization": NORMALIZATION}), device="cpu")
    torch.testing.assert_close(unrecorded, recorded, rtol=0, atol=0)  # none recorded: fss's own
    _, narrower = segment(image, (model, {**metadata, "normalization": {**NORMALIZATION, "high": 60.0}}), device="cpu")
    assert not torch.allclose(narrower, recorded, atol=1e-4)
    with pytest.raises(ValueError, match="cannot reproduce"):
        segment(image, (model, {**metadata, "normalization": {"method": "z-score"}}), device="cpu")


def test_empty_scan_is_refused(checkpoint):
    with pytest.raises(ValueError, match="nothing to segment"):
        segment(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), checkpoint, device="cpu")


def test_a_negative_margin_and_a_packaged_models_name_given_as_a_path_are_refused_with_the_way_out(checkpoint):
    with pytest.raises(ValueError, match="margin_mm must be 0 or more"):
        segment(scan(), checkpoint, device="cpu", margin_mm=-20)
    with pytest.raises(CheckpointError, match=re.escape("pass pretrained.load('fss-synth-cpu')")):
        segment(scan(), "fss-synth-cpu", device="cpu")


def test_an_image_that_is_no_volume_and_a_reversed_model_pair_are_refused_naming_the_argument(checkpoint):
    image = scan()
    for wrong in (np.asarray(image.dataobj), torch.from_numpy(np.asarray(image.dataobj)), None):
        with pytest.raises(TypeError, match="^image: expected the path of a NIfTI file or a nibabel image"):
            segment(wrong, checkpoint, device="cpu")
    model, metadata = load_checkpoint(checkpoint)
    with pytest.raises(TypeError, match=re.escape("checkpoint: a (metadata, model) pair; give (model, metadata)")):
        segment(image, (metadata, model), device="cpu")
    with pytest.raises(TypeError, match="^checkpoint: expected a checkpoint path or the"):
        segment(image, model, device="cpu")
    labels, _ = segment(image, (model, metadata), device="cpu")  # the right order is taken as it is
    assert labels.shape == image.shape


def assert_valid_derivative(root):
    """Every file of ``root`` is named as the BIDS schema allows in a derivative dataset, or listed in .bidsignore."""
    schema = load_schema()
    rules = [
        rule["regex"] for group in (schema.rules.files.common, schema.rules.files.deriv) for rule in regexify_filename_rules(group, schema, level=2)
    ]
    ignored = (root / ".bidsignore").read_text().split()
    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != ".bidsignore"]
    invalid = [
        f for f in files if not any(fnmatch.fnmatch(Path(f).name, pattern) for pattern in ignored) and not any(re.match(rule, f) for rule in rules)
    ]
    assert not invalid, f"not valid in a BIDS derivative: {invalid}"
    assert any(f.endswith("_dseg.nii.gz") for f in files)
    description = json.loads((root / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "fss" and description["BIDSVersion"]
    table = pd.read_csv(root / "dseg.tsv", sep="\t")
    assert list(table["index"]) == list(range(8)) and table.loc[3, "name"] == "WM"


def test_cli_on_a_bids_folder(tmp_path, checkpoint, capsys):
    root, out = bids(tmp_path), tmp_path / "derivatives" / "fss"
    args = ["segment", str(root), "-o", str(out), "--checkpoint", str(checkpoint), "--device", "cpu", "--qc"]
    assert main(args) == 1, "a failed image makes the exit code non-zero"
    printed = capsys.readouterr().out
    assert "sub-03/anat/sub-03_T2w.nii.gz: failed" in printed and "NaN" in printed
    first = out / "sub-01" / "anat" / "sub-01_dseg.nii.gz"
    second = out / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_dseg.nii.gz"
    assert first.exists() and second.exists() and (out / "sub-01" / "anat" / "sub-01_dseg_qc.png").exists()
    assert_valid_derivative(out)
    volumes = pd.read_csv(out / "volumes.tsv", sep="\t")
    assert len(volumes) == 2
    labels = nib.load(first)
    voxel = abs(np.linalg.det(labels.affine[:3, :3]))
    expected = np.count_nonzero(np.asarray(labels.dataobj) > 1) * voxel  # the brain without its extra-axial CSF
    assert volumes.loc[volumes.image == "sub-01/anat/sub-01_T2w.nii.gz", "brain_mm3"].item() == pytest.approx(expected)
    stamp = first.stat().st_mtime_ns
    description = json.loads((out / "dataset_description.json").read_text())
    added = {"Authors": ["A. User"], "SourceDatasets": [{"URL": "file://../.."}], "Name": "our fss run"}
    (out / "dataset_description.json").write_text(json.dumps({**description, **added}))  # what a user adds to fss's description
    assert main(args) == 1  # sub-03 fails again; the others are kept, not redone
    kept = json.loads((out / "dataset_description.json").read_text())
    assert {key: kept[key] for key in added} == added and kept["GeneratedBy"][0]["Name"] == "fss"
    printed = capsys.readouterr().out
    assert "sub-01/anat/sub-01_T2w.nii.gz: " in printed and "exists, made from the same input, model and options: kept" in printed
    assert first.stat().st_mtime_ns == stamp and len(pd.read_csv(out / "volumes.tsv", sep="\t")) == 2


def test_uncompressed_bids_images_and_label_maps_are_found_as_the_compressed_ones(tmp_path, checkpoint, capsys):
    root = bids(tmp_path)
    (root / "sub-04" / "anat").mkdir(parents=True)
    nib.save(scan(seed=4), root / "sub-04" / "anat" / "sub-04_T2w.nii")  # valid BIDS, uncompressed
    nib.save(nib.Nifti1Image(np.zeros((30, 26, 14), np.int16), np.eye(4)), root / "sub-04" / "anat" / "sub-04_dseg.nii")
    found = {image.image.name: image.labels for image in find_t2w_images(root)}
    assert "sub-04_T2w.nii" in found and found["sub-04_T2w.nii"].name == "sub-04_dseg.nii"
    out = tmp_path / "derivatives" / "fss"
    assert main(["segment", str(root), "-o", str(out), "--checkpoint", str(checkpoint), "--device", "cpu"]) == 1  # sub-03 is all NaN
    assert "3 of 4 images segmented" in capsys.readouterr().out and (out / "sub-04" / "anat" / "sub-04_dseg.nii.gz").exists()


def test_a_network_with_weights_that_are_not_finite_is_refused(checkpoint):
    model, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        next(model.parameters())[0] = float("nan")  # as a diverged training leaves them
    with pytest.raises(ValueError, match="the network's output is not finite"):
        predict_working(model, np.random.default_rng(0).random((16, 16, 16), dtype=np.float32))


def test_cli_reports_each_bad_input_and_segments_the_others(tmp_path, checkpoint, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    nib.save(scan(), inputs / "good_T2w.nii.gz")
    (inputs / "text_T2w.nii.gz").write_text("not an image")
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), inputs / "flat_T2w.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 3), np.float32), np.eye(4)), inputs / "series_T2w.nii.gz")
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), np.inf, np.float32), np.eye(4)), inputs / "infinite_T2w.nii.gz")
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), inputs / "colour_T2w.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), inputs / "empty_T2w.nii.gz")
    huge = scan().get_fdata()
    nib.save(nib.Nifti1Image(huge / huge.max() * 1e39, scan().affine), inputs / "huge_T2w.nii.gz")  # float64 beyond float32
    whole = (inputs / "good_T2w.nii.gz").read_bytes()
    (inputs / "cut_T2w.nii.gz").write_bytes(whole[: len(whole) // 2])  # a download cut short: header fine, data not
    reasons = {
        "text": "not a readable NIfTI",
        "flat": "2-D",
        "series": "4-D with 3 volumes",
        "infinite": "NaN or infinite",
        "colour": "colour or complex values",
        "empty": "nothing to segment",
        "huge": "beyond float32's range",
        "cut": "cannot be read",
    }
    files = sorted(str(p) for p in inputs.iterdir())
    out = tmp_path / "out"
    assert main(["segment", *files, "-o", str(out), "--checkpoint", str(checkpoint), "--device", "cpu"]) == 1
    printed = capsys.readouterr().out
    for stem, reason in reasons.items():
        line = next(line for line in printed.splitlines() if line.startswith(f"{stem}_T2w.nii.gz: failed"))
        assert reason in line, line
    assert sorted(p.name for p in out.iterdir()) == ["good_dseg.json", "good_dseg.nii.gz", "volumes.tsv"]
    assert "1 of 9 images segmented" in printed and "8 failed" in printed


def test_cli_single_file(tmp_path, checkpoint, capsys):
    nib.save(scan(oblique=False), tmp_path / "scan.nii.gz")
    out = tmp_path / "result" / "labels.nii.gz"
    assert main(["segment", str(tmp_path / "scan.nii.gz"), "-o", str(out), "--checkpoint", str(checkpoint), "--device", "cpu"]) == 0
    assert nib.load(out).shape == (30, 26, 14) and (out.parent / "volumes.tsv").exists()
    stamp = out.stat().st_mtime_ns
    assert main(["segment", str(tmp_path / "scan.nii.gz"), "-o", str(out), "--checkpoint", str(checkpoint)]) == 0
    assert "exists, made from the same input, model and options: kept" in capsys.readouterr().out and out.stat().st_mtime_ns == stamp
    default = tmp_path / "default" / "labels.nii.gz"  # no --checkpoint: the packaged model
    assert main(["segment", str(tmp_path / "scan.nii.gz"), "-o", str(default), "--device", "cpu"]) == 0
    assert nib.load(default).shape == (30, 26, 14)


@pytest.fixture(scope="module")
def ball_model(tmp_path_factory):
    """A small U-Net trained (on synthetic images) to segment the toy brain: mean Dice > 0.9 on it."""
    volume = ball_volume()
    out = tmp_path_factory.mktemp("ball-model")
    metrics = train(tiny_config(), out, progress=False, training=[volume], validation=[volume])
    assert metrics["final_mean_dice"] > 0.9
    return load_checkpoint(out / "best")


def reoriented(image: nib.Nifti1Image, codes: str) -> nib.Nifti1Image:
    """The same voxels with the axes permuted and flipped to orientation ``codes`` (e.g. "LPS")."""
    transform = ornt_transform(io_orientation(image.affine), axcodes2ornt(tuple(codes)))
    data = apply_orientation(np.asarray(image.dataobj), transform)
    return nib.Nifti1Image(data, image.affine @ inv_ornt_aff(transform, image.shape))


def regridded(image: nib.Nifti1Image, shape, affine) -> nib.Nifti1Image:
    """``image`` resampled (linearly) onto another grid of the same world."""
    return resample_from_to(image, (shape, affine), order=1)


def grid_around_ball(spacing, angles=(0, 0, 0)) -> tuple[tuple[int, int, int], np.ndarray]:
    """(shape, affine) of a grid of ``spacing`` mm rotated by ``angles`` (degrees) about the toy brain's centre, holding it whole."""
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", angles, degrees=True).as_matrix() @ np.diag(spacing)
    extent = 64 * 0.8  # mm: the original field of view
    shape = tuple(int(np.ceil(extent / s)) for s in spacing)
    affine[:3, 3] = CENTRE_MM - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    return shape, affine


def tissue_dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3,) Dice of the toy brain's labels 1, 2, 3 between two label maps."""
    return np.array([dice(a == label, b == label) for label in (1, 2, 3)])


@pytest.mark.slow
def test_segmentation_follows_the_image_through_reorientation_and_resampling(ball_model):
    """Every version is segmented on its own grid; in world space the segmentations agree.

    Re-oriented versions hold the same voxels, so their segmentations must be the original's
    exactly. Resampled versions (oblique, 0.5 mm, 0.8 x 0.8 x 3 mm) are other images of the same
    brain: their segmentations must agree with the original's and be as accurate against the truth
    drawn on their own grid. (The toy model works at 1.6 mm, where its own boundary error is a few
    tenths of a voxel: that, not the geometry, bounds the agreement of resampled versions.)
    """
    affine = np.diag([0.8, 0.8, 0.8, 1.0])
    affine[:3, 3] = CENTRE_MM - 0.8 * 31.5  # the toy brain in the middle of a 64^3 grid at 0.8 mm
    truth = ball_labels((64, 64, 64), affine)
    original = nib.Nifti1Image(ball_image(truth), affine)
    reference, reference_probabilities = segment(original, ball_model, device="cpu")
    accuracy = tissue_dice(np.asarray(reference.dataobj), truth)
    assert accuracy.mean() > 0.9, "the model should segment the toy brain"

    versions = {codes: reoriented(original, codes) for codes in ("LPS", "PIR")}
    versions["oblique"] = regridded(original, *grid_around_ball((0.8, 0.8, 0.8), (20, -15, 30)))
    versions["0.5 mm"] = regridded(original, *grid_around_ball((0.5, 0.5, 0.5)))
    versions["0.8 x 0.8 x 3 mm"] = regridded(original, *grid_around_ball((0.8, 0.8, 3.0)))
    agreement, accuracy_there = {}, {}
    for name, version in versions.items():
        labels, probabilities = segment(version, ball_model, device="cpu")
        assert labels.shape == version.shape and np.array_equal(labels.affine, version.affine), name
        assert probabilities.shape == (8, *version.shape), name
        # the original segmentation in the version's grid: its probabilities interpolated there
        mapped = np.stack([resample_from_to(nib.Nifti1Image(p.numpy(), original.affine), version, order=1).dataobj for p in reference_probabilities])
        agreement[name] = tissue_dice(np.asarray(labels.dataobj), mapped.argmax(0))
        accuracy_there[name] = tissue_dice(np.asarray(labels.dataobj), ball_labels(version.shape, version.affine))
    assert all(agreement[name].min() > 0.999 for name in ("LPS", "PIR")), agreement
    assert all(agreement[name].mean() > 0.9 for name in ("oblique", "0.5 mm")), agreement
    assert all(np.abs(accuracy_there[name] - accuracy).max() < 0.02 for name in ("oblique", "0.5 mm")), (accuracy, accuracy_there)
    assert agreement["0.8 x 0.8 x 3 mm"].mean() > 0.8, agreement
