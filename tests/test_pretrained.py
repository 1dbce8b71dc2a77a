import numpy as np
import pytest
import torch

from fss import datasets, pretrained
from fss.checkpoint import load_checkpoint, save_checkpoint
from fss.infer import predict_working, segment
from fss.metrics import dice_per_tissue
from fss.unet import UNet


def test_export_stores_half_precision_weights_that_predict_alike_with_what_the_run_recorded(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = UNet(channels=(4, 8))
    sittings = [
        {"from_iteration": 0, "machine": "cpu (2 threads)", "torch": "2.13.0", "command": "fss train --config c.yaml --until 5"},
        {"from_iteration": 5, "machine": "cpu (2 threads)", "torch": "2.13.0", "command": "fss train --config c.yaml --resume"},
    ]
    save_checkpoint(model, tmp_path / "run" / "best", {"spacing_mm": 1.6, "iterations": 10, "training_seconds": 90.0, "sittings": sittings})
    save_checkpoint(model, tmp_path / "old" / "best", {"spacing_mm": 1.6, "iterations": 10})
    monkeypatch.setattr(pretrained, "WEIGHTS", tmp_path / "weights")
    with pytest.raises(KeyError, match="no packaged model 'tiny'; available: none"):
        pretrained.load("tiny")
    with pytest.raises(ValueError, match="does not record its training time"):
        pretrained.export(tmp_path / "old" / "best", "tiny", folder=tmp_path / "weights")
    with pytest.raises(ValueError, match=r"facts \['training_minutes'\] are read from the checkpoint"):
        pretrained.export(tmp_path / "run" / "best", "tiny", {"training_minutes": 1.0}, folder=tmp_path / "weights")
    written = pretrained.export(tmp_path / "run" / "best", "tiny", {"note": "a test"}, folder=tmp_path / "weights")
    assert pretrained.available() == ["tiny"]
    half, metadata = pretrained.load("tiny")
    assert metadata["name"] == "tiny" and metadata["note"] == "a test" and metadata["iterations"] == 10
    assert metadata["training_minutes"] == 1.5 and metadata["training_machines"] == ["cpu (2 threads)"]
    assert metadata["training_commands"] == [s["command"] for s in sittings]
    assert metadata["weights_dtype"] == "float16" and next(half.parameters()).dtype == torch.float32
    assert written.stat().st_size < 0.6 * (tmp_path / "run" / "best.safetensors").stat().st_size
    volume = torch.rand(16, 16, 16)
    torch.testing.assert_close(predict_working(half, volume), predict_working(model, volume), atol=5e-3, rtol=0)
    with pytest.raises(FileExistsError):
        pretrained.export(tmp_path / "run" / "best", "tiny", folder=tmp_path / "weights")


def test_export_counts_the_first_stage_of_a_run_that_started_from_another(tmp_path):
    first = {"from_iteration": 0, "machine": "cpu (2 threads, AVX2 kernels)", "torch": "2.13.0", "command": "fss train --config coarse.yaml"}
    second = {"from_iteration": 0, "machine": "cpu (2 threads, AVX512 kernels)", "torch": "2.13.0", "command": "fss train --config fine.yaml"}
    initialized_from = {"checkpoint": "coarse/last", "iterations": 4, "training_seconds": 30.0, "sittings": [first]}
    metadata = {"iterations": 10, "training_seconds": 90.0, "sittings": [second], "initialized_from": initialized_from}
    save_checkpoint(UNet(channels=(4, 8)), tmp_path / "run" / "last", metadata)
    pretrained.export(tmp_path / "run" / "last", "tiny", folder=tmp_path / "weights")
    _, exported = load_checkpoint(tmp_path / "weights" / "tiny")
    assert exported["training_minutes"] == 2.0
    assert exported["training_machines"] == [first["machine"], second["machine"]]
    assert exported["training_commands"] == [first["command"], second["command"]]


@pytest.mark.slow
@pytest.mark.parametrize("name", pretrained.available())
def test_shipped_model_segments_a_held_out_atlas_age(mirror, name):
    model, metadata = pretrained.load(name)
    held_out = {"crl-GA23", "crl-GA27", "crl-GA31", "crl-GA35"}
    assert set(metadata["data"]["validation"]) == held_out and not held_out & set(metadata["data"]["training"])
    assert metadata["weights_dtype"] == "float16" and (pretrained.WEIGHTS / f"{name}.safetensors").stat().st_size < 25e6
    assert metadata["training_minutes"] > 0 and all(command.startswith("fss train") for command in metadata["training_commands"])
    assert metadata["iterations"] > 0 and metadata["initialized_from"]["iterations"] > 0  # coarse to fine: both stages recorded
    [record] = datasets.fetch_crl_atlas(ages=[31])
    labels, _ = segment(record.image, (model, metadata), device="cpu")
    reference = np.asarray(record.feta_labels().dataobj)
    scores = dice_per_tissue(np.asarray(labels.dataobj), reference)
    assert np.mean(list(scores.values())) > 0.75, scores  # measured: 0.804 (fss-synth-cpu), 0.936 (fss-real-cpu)
