import nibabel as nib
import numpy as np

import fss.evaluation
from fss import datasets
from fss.evaluation import crl_dice
from fss.labels import TISSUES


def test_crl_dice_scores_what_segment_returns_on_each_scans_own_grid(mirror, monkeypatch):
    """A stand-in for segment returns each scan's reference labels (Dice 1), then with the cortex called white matter."""
    records = datasets.fetch_crl_atlas(ages=(23, 31))
    calls = []

    def reference_as_prediction(scan, checkpoint, device):
        data = np.asarray(scan.dataobj)
        [record] = [r for r in records if np.array_equal(np.asarray(nib.load(r.image).dataobj), data)]
        calls.append((record.name, scan.shape, checkpoint))
        labels = np.asarray(record.feta_labels().dataobj).astype(np.int16)
        labels[labels == 2] = cortex_label[0]
        return nib.Nifti1Image(labels, scan.affine), None

    cortex_label = [2]
    monkeypatch.setattr(fss.evaluation, "segment", reference_as_prediction)
    scores = crl_dice(("model", {}), ages=(23, 31))
    assert list(scores.index) == [r.name for r in records] and list(scores.columns) == [t.short for t in TISSUES[1:]]
    assert (scores.to_numpy() == 1).all()
    assert calls == [(r.name, nib.load(r.image).shape, ("model", {})) for r in records]
    cortex_label[0] = 3
    scores = crl_dice(("model", {}), ages=(23, 31))
    assert (scores["GM"] == 0).all() and (scores["WM"] < 1).all() and (scores.drop(columns=["GM", "WM"]).to_numpy() == 1).all()
