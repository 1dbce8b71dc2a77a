"""The answers under the notebooks' "Try it" exercises, where they state something measurable.

Each test computes what the exercise asks for, through the functions the notebook calls, and
checks the answer's claim, so that an answer cannot go stale when the data, the seeds or the
models change. Answers that re-run a notebook with another parameter are checked in
``test_notebook_parameters.py``.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fss import datasets
from fss.experiments import load_experiment, plan
from fss.io import load_nifti
from fss.labels import META_LABELS, to_feta
from fss.metrics import tissue_volumes

pytestmark = pytest.mark.slow


def test_00_white_matter_gains_tens_of_ml_from_22_to_30_weeks_the_ventricles_a_few(mirror):
    young, old = (tissue_volumes(record.feta_labels()) for record in datasets.fetch_crl_atlas(ages=[22, 30]))
    gain = {tissue: (old[f"{tissue}_mm3"] - young[f"{tissue}_mm3"]) / 1000 for tissue in ("WM", "VEN")}  # ml
    assert gain["WM"] > 20, gain
    assert abs(gain["VEN"]) < 5 and max(young["VEN_mm3"], old["VEN_mm3"]) / 1000 < 10, gain


def test_01_grey_matter_components_overlap_most_at_two_subclasses(mirror):
    from fss.seeds import make_seeds

    [record] = datasets.fetch_crl_atlas(ages=[30])  # the notebook's example age and seed
    labels = load_nifti(record.labels)
    labels = nib.Nifti1Image(to_feta(np.asarray(labels.dataobj), record.convention), labels.affine)
    seeds = make_seeds(load_nifti(record.image), labels, max_subclasses=2, seed=0)

    def shared_area(mixture) -> float:
        """The area under both weighted components, as the notebook's histograms draw them."""
        x = np.linspace(mixture.means[0] - 6 * mixture.stds[0], mixture.means[1] + 6 * mixture.stds[1], 20001)
        curves = [
            w * np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)) for mu, sd, w in zip(mixture.means, mixture.stds, mixture.weights)
        ]
        return float(np.minimum(*curves).sum() * (x[1] - x[0]))

    overlap = {META_LABELS[m][0]: shared_area(mixture) for m, mixture in seeds.mixtures[2].items()}
    assert 0.10 < overlap["grey matter"] < 0.14, overlap  # "about an eighth"
    assert 0.05 < min(overlap["CSF"], overlap["white matter"]) and max(overlap["CSF"], overlap["white matter"]) < 0.08, overlap
    assert abs(overlap["non-brain"] - overlap["grey matter"]) < 0.02, overlap


def test_06_the_dry_run_of_training_data_has_six_runs_each_named_by_its_parameters():
    experiment = load_experiment(Path(__file__).parents[1] / "experiments" / "training-data.yaml")
    runs = plan(experiment, "tiny")
    assert len(runs) == 3 * 2 and len({run.arm for run in runs}) == 3 and len({run.seed for run in runs}) == 2
    ids = {run.id for run in runs}
    assert len(ids) == 6
    # the id holds a hash of the parameters: another setting gives other ids
    assert ids.isdisjoint(run.id for run in plan(experiment, "cpu"))


def test_03_the_first_loss_is_a_cross_entropy_near_ln_8_plus_one_minus_a_soft_dice_near_0(mirror):
    import math

    import torch
    import torch.nn.functional as F

    from fss.optimization import dice_ce_loss
    from fss.training_config import TrainConfig
    from fss.training_data import prepare_crl, training_batches

    config = TrainConfig.load("cpu-demo", ["deterministic=true"])  # the notebook's defaults
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        network = config.network()
    training = prepare_crl(config.ages_to_train(), config.spacing, True, config.seeds_dir, config.seed)
    images, labels = next(training_batches(config, training, torch.device("cpu"), rank=0, start=0))
    with torch.no_grad():
        scores = network(images)
    cross_entropy = F.cross_entropy(scores, labels).item()
    probabilities = torch.softmax(scores, dim=1)[:, 1:]  # the learner's own soft Dice: foreground tissues, batch and voxels summed
    target = F.one_hot(labels, 8).permute(0, 4, 1, 2, 3)[:, 1:].float()
    soft_dice = (2 * (probabilities * target).sum((0, 2, 3, 4)) / (probabilities.sum((0, 2, 3, 4)) + target.sum((0, 2, 3, 4)))).mean().item()
    assert abs(cross_entropy - 2.17) < 0.01 and abs(cross_entropy - math.log(8)) < 0.1, cross_entropy
    assert abs((1 - soft_dice) - 0.96) < 0.01, soft_dice
    assert abs(cross_entropy + 1 - soft_dice - dice_ce_loss(scores, labels).item()) < 1e-4  # "the two add up"
    assert round(cross_entropy + 1 - soft_dice, 2) == 3.12
    assert 0.75 < (labels == 0).float().mean().item() < 0.85  # "about four voxels in five are background"
