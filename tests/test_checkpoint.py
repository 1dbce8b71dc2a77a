import json

import pytest
import torch

from fss.checkpoint import CheckpointError, describe_checkpoint, load_checkpoint, paths, read_metadata, save_checkpoint
from fss.unet import UNet


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = UNet(channels=(4, 8, 16)).eval()
    save_checkpoint(model, tmp_path / "model", {"spacing_mm": 1.6, "mean_validation_dice": 0.5})
    return model, tmp_path / "model"


def test_round_trip(saved):
    model, stem = saved
    loaded, metadata = load_checkpoint(stem)
    x = torch.rand(1, 1, 8, 8, 8)
    assert torch.equal(loaded(x), model(x))
    assert metadata["architecture"] == {
        "name": "UNet",
        "in_channels": 1,
        "n_classes": 8,
        "channels": [4, 8, 16],
        "dropout": 0.0,
        "skip": "concatenate",
    }
    assert metadata["label_convention"] == "feta" and metadata["spacing_mm"] == 1.6 and metadata["fss_version"]
    on_any, _ = load_checkpoint(stem, "auto")  # the notebooks' default: the best device there is (the CPU here)
    assert next(on_any.parameters()).device.type == ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")


def test_checkpoints_from_before_the_skip_option_load_with_concatenated_skips(tmp_path):
    torch.manual_seed(0)
    model = UNet(channels=(4, 8, 16)).eval()
    del model.config["skip"]  # what fss 0.1 wrote
    save_checkpoint(model, tmp_path / "old", {})
    loaded, metadata = load_checkpoint(tmp_path / "old")
    x = torch.rand(1, 1, 8, 8, 8)
    assert "skip" not in metadata["architecture"] and loaded.config["skip"] == "concatenate"
    assert torch.equal(loaded(x), model(x))


def test_an_added_skip_architecture_round_trips(tmp_path):
    torch.manual_seed(0)
    model = UNet(channels=(4, 8, 16), skip="add").eval()
    save_checkpoint(model, tmp_path / "added", {})
    loaded, metadata = load_checkpoint(tmp_path / "added")
    x = torch.rand(1, 1, 8, 8, 8)
    assert metadata["architecture"]["skip"] == "add" and torch.equal(loaded(x), model(x))


def test_tampered_metadata_is_refused(saved):
    _, stem = saved
    weights, metadata_path = paths(stem)
    document = json.loads(metadata_path.read_text())
    document["mean_validation_dice"] = 0.99
    metadata_path.write_text(json.dumps(document, indent=1, sort_keys=True))
    with pytest.raises(CheckpointError, match="metadata was changed"):
        load_checkpoint(stem)


def test_tampered_or_swapped_weights_are_refused(saved, tmp_path):
    _, stem = saved
    weights, _ = paths(stem)
    save_checkpoint(UNet(channels=(4, 8, 16)), tmp_path / "other", {})
    weights.write_bytes((tmp_path / "other.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="sha256 differs"):
        read_metadata(stem)


def test_missing_file_and_a_model_for_other_labels(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "nothing")
    save_checkpoint(UNet(n_classes=4, channels=(4, 8)), tmp_path / "four", {})
    with pytest.raises(CheckpointError, match="not a FeTA 8-class segmentation model"):
        load_checkpoint(tmp_path / "four")


def test_float16_storage_halves_the_size(tmp_path):
    model = UNet(channels=(8, 16, 32))
    save_checkpoint(model, tmp_path / "full", {})
    save_checkpoint(model, tmp_path / "half", {}, dtype=torch.float16)
    full, half = paths(tmp_path / "full")[0].stat().st_size, paths(tmp_path / "half")[0].stat().st_size
    assert half < 0.6 * full
    loaded, metadata = load_checkpoint(tmp_path / "half")
    assert metadata["weights_dtype"] == "float16" and next(loaded.parameters()).dtype == torch.float32


def test_the_description_of_a_coarse_to_fine_run_names_both_stages():
    first = {"iterations": 1200, "spacing_mm": 3.2, "training_seconds": 250.0}
    metadata = {"training": {"mode": "synthetic"}, "iterations": 10000, "spacing_mm": 1.6, "training_minutes": 88.5, "mean_validation_dice": 0.7212}
    assert describe_checkpoint(metadata) == "synthetic training, 10000 iterations at 1.6 mm, 88 CPU minutes, validation Dice 0.721"
    coarse_to_fine = describe_checkpoint({**metadata, "initialized_from": first})
    assert coarse_to_fine == "synthetic training, 10000 iterations at 1.6 mm after 1200 at 3.2 mm, 88 CPU minutes, validation Dice 0.721"
    assert describe_checkpoint({}) == "training not recorded, grid not recorded"
