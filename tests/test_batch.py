"""fss.batch.segment_batch, called from Python as notebooks and scripts do (the command line's tests are in test_cli.py)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scans import scan

from fss.batch import plan, segment_batch
from fss.checkpoint import load_checkpoint
from fss.io import load_nifti
from fss.metrics import tissue_volumes


def test_segment_batch_reports_segmented_kept_and_failed_images_as_the_table_does(tmp_path, checkpoint):
    nib.save(scan(seed=1), tmp_path / "a.nii.gz")
    broken = scan(seed=2)
    nib.save(nib.Nifti1Image(np.full(broken.shape, np.nan, np.float32), broken.affine), tmp_path / "b.nii.gz")
    model = load_checkpoint(checkpoint, "cpu")
    inputs = [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"]
    result = segment_batch(inputs, tmp_path / "out", model, model_name="tiny", device="cpu", qc=True, progress=False)
    assert list(result.failed) == ["b.nii.gz"] and "NaN" in result.failed["b.nii.gz"] and result.kept == []
    assert [row["image"] for row in result.rows] == ["a.nii.gz"]
    assert result.rows[0] == {
        "image": "a.nii.gz",
        "segmentation": str((tmp_path / "out" / "a_dseg.nii.gz").resolve()),
        **tissue_volumes(load_nifti(tmp_path / "out" / "a_dseg.nii.gz")),
    }
    assert pd.read_csv(result.table, sep="\t").to_dict("records") == result.rows
    assert json.loads((tmp_path / "out" / "a_dseg.json").read_text())["model"] == "tiny" and (tmp_path / "out" / "a_dseg_qc.png").exists()
    again = segment_batch(inputs[:1], tmp_path / "out", model, model_name="tiny", device="cpu", qc=True, progress=False)
    assert again.kept == ["a.nii.gz"] and again.rows == result.rows and not again.failed
    other = segment_batch(inputs[:1], tmp_path / "out" / "a_dseg.nii.gz", model, model_name="tiny", device="cpu", tta=True, progress=False)
    assert "made from other options" in other.failed["a.nii.gz"] and not other.rows  # fss's own output, asked otherwise: not replaced
    replaced = segment_batch(inputs[:1], tmp_path / "out", model, model_name="tiny", device="cpu", tta=True, overwrite=True, progress=False)
    assert not replaced.failed and not replaced.kept and not (tmp_path / "out" / "a_dseg_qc.png").exists()  # its own stale picture goes


def test_a_plan_that_cannot_work_is_refused_before_anything_is_written(tmp_path):
    nib.save(scan(), tmp_path / "a.nii.gz")
    with pytest.raises(FileNotFoundError, match="missing.nii.gz: no such file"):
        plan([tmp_path / "a.nii.gz", tmp_path / "missing.nii.gz"], tmp_path / "out")
    with pytest.raises(ValueError, match="is given 2 times"):
        plan([tmp_path / "a.nii.gz", tmp_path / "." / "a.nii.gz"], tmp_path / "out")
    with pytest.raises(ValueError, match="fss never writes over its inputs"):
        plan([tmp_path / "a.nii.gz"], tmp_path / "a.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]
