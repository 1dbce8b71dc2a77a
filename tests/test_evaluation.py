import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.processing import resample_from_to

import fss.evaluation
from fss import datasets
from fss.checkpoint import load_checkpoint
from fss.evaluation import (
    OUTSIDE_IMAGE,
    READY_MADE,
    RESULT_COLUMNS,
    atlas_cases,
    crl_dice,
    drops_from_clean,
    evaluate,
    tissue_table,
    trained_checkpoint,
    turned_agreement,
    with_stress_columns,
)
from fss.experiments import dice_per_seed
from fss.io import load_nifti
from fss.labels import TISSUES
from fss.metrics import summarize
from fss.pretrained import NOTEBOOK_03, available
from fss.stress import stress
from fss.unet import UNet


def stand_in(name: str) -> tuple[UNet, dict]:
    """A (model, metadata) pair, which the stand-ins for ``segment`` below tell apart by the name in its metadata."""
    return UNet(channels=(2, 4)), {"name": name}


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
    model = stand_in("model")
    scores = crl_dice(model, ages=(23, 31))
    assert list(scores.index) == [r.name for r in records] and list(scores.columns) == [t.short for t in TISSUES[1:]]
    assert (scores.to_numpy() == 1).all()
    assert calls == [(r.name, nib.load(r.image).shape, model) for r in records]
    cortex_label[0] = 3
    scores = crl_dice(model, ages=(23, 31))
    assert (scores["GM"] == 0).all() and (scores["WM"] < 1).all() and (scores.drop(columns=["GM", "WM"]).to_numpy() == 1).all()


def test_atlas_cases_come_in_order_and_load_as_their_dataset_says(mirror):
    cases = atlas_cases(crl_ages=(31,), wu_ages=(30,), stress_ages=(31,), stresses=("noise", "gamma"), severities=(1, 3), seed=4)
    assert [(c.dataset, c.name) for c in cases] == [
        ("CRL (held out)", "crl-GA31"),
        ("Wu 2021, whole head", "wu-GA30"),
        ("Wu 2021, brain mask", "wu-GA30"),
        ("stress: noise", "crl-GA31 severity 1"),
        ("stress: noise", "crl-GA31 severity 3"),
        ("stress: gamma", "crl-GA31 severity 1"),
        ("stress: gamma", "crl-GA31 severity 3"),
    ]
    clean, stressed, whole, masked = cases[0].load(), cases[4].load(), cases[1].load(), cases[2].load()
    crl = datasets.fetch_crl_atlas(ages=(31,))[0]
    plain = np.asarray(nib.load(crl.image).dataobj, dtype=np.float32)
    np.testing.assert_array_equal(clean[0].get_fdata(dtype=np.float32), plain)
    np.testing.assert_array_equal(stressed[1], clean[1])  # the anatomy stays, only its picture changes
    np.testing.assert_array_equal(stressed[0].affine, clean[0].affine)
    np.testing.assert_allclose(np.asarray(stressed[0].dataobj), stress(plain, (0.8, 0.8, 0.8), "noise", 3, seed=4))
    brain = np.asarray(nib.load(datasets.fetch_wu_atlas(ages=(30,))[0].mask).dataobj) > 0
    assert np.asarray(masked[0].dataobj)[~brain].max() == 0 and np.asarray(whole[0].dataobj)[~brain].max() > 0
    assert atlas_cases(wu_ages=(30,), wu_whole_head=False)[0].dataset == "Wu 2021, brain mask"


def test_evaluate_measures_each_models_segmentation_on_the_cases_own_grid(mirror, monkeypatch):
    """One stand-in model returns the reference labels, the other calls every cortex voxel white matter."""

    def by_name(scan, checkpoint, device):
        [record] = datasets.fetch_crl_atlas(ages=(31,))
        labels = np.asarray(record.feta_labels().dataobj).astype(np.int16)
        assert scan.shape == labels.shape
        if checkpoint[1]["name"] == "cortex lost":
            labels[labels == 2] = 3
        if checkpoint[1]["name"] == "painter":
            labels[:] = 1
        return nib.Nifti1Image(labels, scan.affine), None

    monkeypatch.setattr(fss.evaluation, "segment", by_name)
    cases = atlas_cases(crl_ages=(31,), stress_ages=(31,), stresses=("bias",), severities=(2,))
    results = evaluate({name: stand_in(name) for name in ("right", "cortex lost", "painter")}, cases, progress=False)
    assert list(results.columns) == RESULT_COLUMNS and len(results) == 3 * 2 * (7 * 3 + 1)
    outside = results[results.metric == OUTSIDE_IMAGE].set_index(["model", "dataset"]).value
    assert (results[results.metric == OUTSIDE_IMAGE].tissue == "all").all()
    assert outside["right", "CRL (held out)"] == 0  # the atlas is 0 only where no tissue is
    image = np.asarray(load_nifti(datasets.fetch_crl_atlas(ages=(31,))[0].image).dataobj)
    assert outside["painter", "CRL (held out)"] == pytest.approx(np.mean(image == 0))
    dice = results[results.metric == "dice"].set_index(["model", "dataset", "tissue"]).sort_index().value
    assert (dice["right"] == 1).all()
    assert (dice["cortex lost", "CRL (held out)", "GM"] == 0) and dice["cortex lost", "stress: bias", "WM"] < 1
    clean, stressed = drops_from_clean(results)
    assert clean["right"] == 1 and stressed["right", "bias", 2] == 1
    assert clean["cortex lost"] == pytest.approx(dice["cortex lost", "CRL (held out)"].mean())
    table = tissue_table(results, ["model"], "hd95")
    assert np.isinf(table.loc["cortex lost", "GM"]) and np.isinf(table.loc["cortex lost", "mean"])  # a missed tissue is seen in the mean


def test_every_table_of_an_evaluation_averages_the_cases_means_as_the_one_reduction_does():
    """Two cases of one model, one with a tissue absent from both maps (NaN): the mean of the cases' means (0.55)
    differs from the mean of the tissues' means (0.5) and from the mean over all rows (0.52)."""
    values = {"crl-GA27": {"WM": 0.9, "GM": 0.5, "BS": np.nan}, "crl-GA31": {"WM": 0.7, "GM": 0.1, "BS": 0.4}}
    rows = [
        {"model": "m", "dataset": dataset, "case": case + suffix, "tissue": tissue, "metric": "dice", "value": value}
        for dataset, suffix in (("CRL (held out)", ""), ("stress: noise", " severity 3"))
        for case, tissues in values.items()
        for tissue, value in tissues.items()
    ]
    results = pd.DataFrame(rows)
    assert tissue_table(results, ["model"], "dice").loc["m", "mean"] == pytest.approx(0.55)
    clean, stressed = drops_from_clean(results)
    assert clean["m"] == pytest.approx(0.55) and stressed["m", "noise", 3] == pytest.approx(0.55)
    gathered = with_stress_columns(results).assign(run="r", arm="a", seed=0)
    per_seed = dice_per_seed(gathered).set_index(["where", "tissue"]).value
    assert per_seed["CRL (held out)", "mean"] == pytest.approx(0.55) and per_seed["noise 3", "mean"] == pytest.approx(0.55)
    summary = summarize(results[results.dataset == "CRL (held out)"].drop(columns=["model", "dataset"]))
    assert summary.loc["mean", "dice"] == pytest.approx(0.55)


def test_drops_from_clean_need_the_clean_image_of_every_stressed_age():
    rows = [
        {"model": "m", "dataset": "CRL (held out)", "case": "crl-GA27", "tissue": "GM", "metric": "dice", "value": 0.8},
        {"model": "m", "dataset": "stress: noise", "case": "crl-GA27 severity 3", "tissue": "GM", "metric": "dice", "value": 0.5},
        {"model": "m", "dataset": "stress: noise", "case": "crl-GA31 severity 3", "tissue": "GM", "metric": "dice", "value": 0.3},
    ]
    with pytest.raises(ValueError, match=r"\['crl-GA31'\] were not evaluated"):
        drops_from_clean(pd.DataFrame(rows))
    clean, stressed = drops_from_clean(pd.DataFrame(rows[:2]))
    assert clean["m"] == 0.8 and stressed["m", "noise", 3] == 0.5


def test_turned_agreement_compares_each_turned_copy_with_the_plain_segmentation(mirror, monkeypatch):
    """A stand-in model that segments perfectly on any grid agrees as the reference labels do; one that always returns
    the plain scan's labels, whatever the grid, does not."""
    [record] = datasets.fetch_crl_atlas(ages=(23,))
    reference = record.feta_labels()

    def perfect(scan, checkpoint, device):
        if checkpoint[1]["name"] == "perfect":
            return resample_from_to(reference, scan, order=0), None
        return nib.Nifti1Image(np.asarray(reference.dataobj), scan.affine), None  # ignores how the grid turned

    monkeypatch.setattr(fss.evaluation, "segment", perfect)
    table = turned_agreement(record, {name: stand_in(name) for name in ("perfect", "stuck")}, degrees=[15], progress=False)
    assert list(table.axis) == ["x", "x", "y", "y", "z", "z"] and set(table.degrees) == {15}
    by_model = table.set_index(["model", "axis"])
    np.testing.assert_allclose(by_model.loc["perfect", "agreement"], by_model.loc["perfect", "labels through the grids"])
    assert (by_model.loc["perfect", "agreement"] > 0.95).all() and (by_model.loc["stuck", "agreement"] < 0.9).all()


def test_clinical_cases_are_each_wu_age_as_stacks_of_each_thickness_across_each_axis(mirror):
    cases = fss.evaluation.clinical_cases([30], slices_mm=(3.0, 6.0), axes=(0, 2), seed=0)
    assert [c.name for c in cases] == [f"wu-GA30 {t} mm slices across axis {a}" for t in (3, 6) for a in (0, 2)]
    assert {c.dataset for c in cases} == {fss.evaluation.CLINICAL_STACKS}
    image, labels = cases[3].load()
    sizes = np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0))
    assert sizes[2] == pytest.approx(6.0) and sizes[0] == pytest.approx(sizes[1]) and 0.5 <= sizes[0] <= 0.8
    assert labels.shape == image.shape and set(np.unique(labels)) == set(range(8))
    again, _ = cases[3].load()
    np.testing.assert_array_equal(np.asarray(again.dataobj), np.asarray(image.dataobj))  # the same draws every time


def test_notebook_03s_model_is_found_from_its_folder_a_stopped_run_or_a_checkpoint(tmp_path):
    run = tmp_path / "03" / "run"
    run.mkdir(parents=True)
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.json"):
        (run / name).write_text("")
    stopped = f"the best checkpoint of the training run in {run} (no summary.json: stopped before its end?)"
    assert trained_checkpoint(tmp_path / "03") == (run / "best", stopped)
    assert trained_checkpoint(run)[0] == run / "best"
    (tmp_path / "03" / "summary.json").write_text(json.dumps({"checkpoint": str(run / "last")}))
    assert trained_checkpoint(tmp_path / "03") == (run / "last", f"chosen by {tmp_path / '03' / 'summary.json'}")
    for given in (run / "last", run / "last.safetensors", run / "last.json"):
        assert trained_checkpoint(given) == (run / "last", "a checkpoint")
    with pytest.raises(FileNotFoundError, match="empty: neither notebook 03's output folder"):
        trained_checkpoint((tmp_path / "empty").mkdir() or tmp_path / "empty")


def test_the_ready_made_checkpoint_is_notebook_03s_as_committed():
    """The checkpoint fss ships for those who cannot train is the one the committed notebook 03 reports."""
    checkpoint, how = trained_checkpoint(READY_MADE)
    assert checkpoint == NOTEBOOK_03 and "ready-made" in how and NOTEBOOK_03.name not in available()  # not a packaged model
    _, metadata = load_checkpoint(checkpoint)
    notebook = json.loads((Path(__file__).parents[1] / "notebooks" / "03_training.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in notebook["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))
    final = re.search(r"final mean validation Dice (\d\.\d{3}), best (\d\.\d{3})", printed)
    assert f"{metadata['mean_validation_dice']:.3f}" == final.group(2)  # best: what notebook 03 hands on
    assert metadata["iterations"] == 800 and metadata["training"]["seed"] == 0 and metadata["training"]["mode"] == "synthetic"
