import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.transform import Rotation

from fss.checkpoint import load_checkpoint, save_checkpoint
from fss.cli import main
from fss.infer import predict_working, segment
from fss.unet import UNet


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    stem = tmp_path_factory.mktemp("model") / "model"
    save_checkpoint(UNet(channels=(4, 8)), stem, {"spacing_mm": 1.6})
    return stem


def scan(shape=(30, 26, 14), oblique=True, seed=0):
    rng = np.random.default_rng(seed)
    affine = np.eye(4)
    rotation = Rotation.from_euler("xyz", [12, -20, 5], degrees=True).as_matrix() if oblique else np.eye(3)
    affine[:3, :3] = rotation @ np.diag([-1.1, 1.3, 2.4])
    affine[:3, 3] = [20.0, -15.0, 8.0]
    data = np.zeros(shape, np.float32)
    data[5:-5, 5:-5, 3:-3] = 100 + 20 * rng.random((shape[0] - 10, shape[1] - 10, shape[2] - 6))
    return nib.Nifti1Image(data, affine)


def test_segment_lands_on_the_input_grid(checkpoint):
    image = scan()
    labels, probabilities = segment(image, checkpoint, device="cpu", tta=True)
    assert labels.shape == image.shape and np.allclose(labels.affine, image.affine)
    assert np.asarray(labels.dataobj).dtype == np.int16 and set(np.unique(labels.dataobj)) <= set(range(8))
    assert probabilities.shape == (8, *image.shape)
    torch.testing.assert_close(probabilities.sum(0), torch.ones(image.shape), atol=1e-4, rtol=0)
    np.testing.assert_array_equal(np.asarray(labels.dataobj), probabilities.argmax(0).numpy())


def test_sliding_window_covers_the_volume(checkpoint):
    model, _ = load_checkpoint(checkpoint)
    volume = torch.rand(40, 36, 20)
    probabilities = predict_working(model, volume, window=16)
    assert probabilities.shape == (8, 40, 36, 20)
    torch.testing.assert_close(probabilities.sum(0), torch.ones(40, 36, 20), atol=1e-4, rtol=0)


def test_empty_scan_is_refused(checkpoint):
    with pytest.raises(ValueError, match="nothing to segment"):
        segment(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), checkpoint, device="cpu")


def bids(tmp_path):
    root = tmp_path / "bids"
    for subject, session in (("01", None), ("02", "1")):
        anat = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
        anat.mkdir(parents=True)
        name = f"sub-{subject}" + (f"_ses-{session}" if session else "") + "_T2w.nii.gz"
        nib.save(scan(seed=int(subject)), anat / name)
    broken = root / "sub-03" / "anat"
    broken.mkdir(parents=True)
    bad = np.full((10, 10, 10), np.nan, np.float32)
    nib.save(nib.Nifti1Image(bad, np.eye(4)), broken / "sub-03_T2w.nii.gz")
    return root


def test_cli_on_a_bids_folder(tmp_path, checkpoint, capsys):
    root, out = bids(tmp_path), tmp_path / "derivatives" / "fss"
    args = ["segment", str(root), "-o", str(out), "--checkpoint", str(checkpoint), "--device", "cpu", "--qc"]
    assert main(args) == 1, "a failed image makes the exit code non-zero"
    printed = capsys.readouterr().out
    assert "sub-03/anat/sub-03_T2w.nii.gz: failed" in printed and "NaN" in printed
    first = out / "sub-01" / "anat" / "sub-01_dseg.nii.gz"
    second = out / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_dseg.nii.gz"
    assert first.exists() and second.exists() and (out / "sub-01" / "anat" / "sub-01_dseg_qc.png").exists()
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    volumes = pd.read_csv(out / "volumes.tsv", sep="\t")
    assert len(volumes) == 2
    labels = nib.load(first)
    voxel = abs(np.linalg.det(labels.affine[:3, :3]))
    expected = np.count_nonzero(np.asarray(labels.dataobj) > 0) * voxel
    assert volumes.loc[volumes.image == "sub-01/anat/sub-01_T2w.nii.gz", "brain_mm3"].item() == pytest.approx(expected)
    stamp = first.stat().st_mtime_ns
    assert main(args) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert first.stat().st_mtime_ns == stamp


def test_cli_single_file(tmp_path, checkpoint, capsys):
    nib.save(scan(oblique=False), tmp_path / "scan.nii.gz")
    out = tmp_path / "result" / "labels.nii.gz"
    assert main(["segment", str(tmp_path / "scan.nii.gz"), "-o", str(out), "--checkpoint", str(checkpoint), "--device", "cpu"]) == 0
    assert nib.load(out).shape == (30, 26, 14) and (out.parent / "volumes.tsv").exists()
    assert main(["segment", str(tmp_path / "scan.nii.gz"), "-o", str(out)]) == 1
    assert "--checkpoint" in capsys.readouterr().err
