import dataclasses
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from ball import ball_volume, tiny_config
from safetensors import SafetensorError
from safetensors.torch import load_file

import fss.infer
import fss.optimization
import fss.train
from fss import datasets
from fss.checkpoint import load_checkpoint
from fss.labels import to_meta_labels
from fss.optimization import dice_ce_loss, learning_rate
from fss.paths import locked
from fss.run_control import CheckpointNotSaved, TrainingDiverged
from fss.seeds import Seeds, save_seeds
from fss.synth.augment import Augmenter
from fss.synth.dataset import SyntheticBatches
from fss.train import train
from fss.training_config import OPTION_DOCS, TrainConfig
from fss.training_data import prepare_crl, training_batches
from fss.unet import UNet


@pytest.mark.slow
def test_learns_one_subject_from_synthetic_images_alone(tmp_path):
    volume = ball_volume()
    metrics = train(tiny_config(), tmp_path, progress=False, training=[volume], validation=[volume])
    assert metrics["final_mean_dice"] > 0.9, metrics["final_dice"]
    log = pd.read_csv(tmp_path / "log.csv")
    assert log["loss"].iloc[-20:].mean() < 0.5 * log["loss"].iloc[:20].mean()
    model, metadata = load_checkpoint(tmp_path / "best")
    assert metadata["mean_validation_dice"] == metrics["best_mean_dice"] and metadata["spacing_mm"] == 1.6
    assert (tmp_path / "curves.png").exists()


def test_resume_continues_iterations_and_schedule_exactly(tmp_path):
    volume = ball_volume()
    config = tiny_config(iterations=6, validation_every=3, batch_size=1, channels=(4, 8))
    straight = train(config, tmp_path / "straight", progress=False, training=[volume], validation=[volume])
    train(config, tmp_path / "split", progress=False, until=3, training=[volume], validation=[volume])
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, tmp_path / "split", progress=False, training=[volume], validation=[volume])
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        train(config, tmp_path / "split", resume=True, overwrite=True, progress=False, training=[volume], validation=[volume])
    resumed = train(config, tmp_path / "split", resume=True, progress=False, training=[volume], validation=[volume])
    assert resumed["iterations"] == straight["iterations"] == 6
    a, b = pd.read_csv(tmp_path / "straight" / "log.csv"), pd.read_csv(tmp_path / "split" / "log.csv")
    assert b["iteration"].tolist() == list(range(1, 7))
    np.testing.assert_allclose(b["learning_rate"], a["learning_rate"])
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-5)
    first, _ = load_checkpoint(tmp_path / "straight" / "last")
    second, metadata = load_checkpoint(tmp_path / "split" / "last")
    assert [sitting["from_iteration"] for sitting in metadata["sittings"]] == [0, 3] and metadata["sittings"][0]["machine"].startswith("cpu")
    assert metadata["training_seconds"] == b["seconds"].iloc[-1]
    for p, q in zip(first.parameters(), second.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_resuming_with_other_package_sources_says_so_and_the_same_sources_say_nothing(tmp_path, monkeypatch):
    volume = ball_volume()
    config = tiny_config(iterations=4, validation_every=2, batch_size=1, channels=(4, 8), crop_shape=(16, 16, 16))
    train(config, tmp_path, progress=False, until=2, training=[volume], validation=[volume])
    _, metadata = load_checkpoint(tmp_path / "last")
    assert metadata["fss_source_sha256"] == fss.source_sha256() and len(metadata["fss_source_sha256"]) == 16
    monkeypatch.setattr(fss.train, "source_sha256", lambda: "0123456789abcdef")  # a preset or stage changed since
    with pytest.warns(UserWarning, match=f"with sources {metadata['fss_source_sha256']}, and fss .* with sources 0123456789abcdef resumes it"):
        train(config, tmp_path, resume=True, progress=False, until=3, training=[volume], validation=[volume])
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(config, tmp_path, resume=True, progress=False, training=[volume], validation=[volume])


def test_runs_from_before_the_skip_setting_resume_with_concatenated_skips_only(tmp_path, monkeypatch):
    volume = ball_volume()
    config = tiny_config(iterations=4, validation_every=2, batch_size=1, channels=(4, 8), crop_shape=(16, 16, 16))
    to_dict = TrainConfig.to_dict
    with monkeypatch.context() as patch:  # the settings fss 0.1 recorded: no "skip"
        patch.setattr(TrainConfig, "to_dict", lambda self: {k: v for k, v in to_dict(self).items() if k != "skip"})
        train(config, tmp_path, progress=False, until=2, training=[volume], validation=[volume])
    with pytest.raises(ValueError, match="skip: 'concatenate' then, 'add' now"):
        train(dataclasses.replace(config, skip="add"), tmp_path, resume=True, progress=False, training=[volume], validation=[volume])
    resumed = train(config, tmp_path, resume=True, progress=False, training=[volume], validation=[volume])
    assert resumed["iterations"] == 4


def test_training_seconds_leave_validation_out(tmp_path, monkeypatch):
    """Each validation moves the clock on by an hour: none of it may reach the recorded training time."""
    volume = ball_volume()
    validate = fss.train.validate
    perf_counter = time.perf_counter
    hours = {"passed": 0}

    def slow_validation(model, volumes):
        hours["passed"] += 1
        return validate(model, volumes)

    monkeypatch.setattr(fss.train, "validate", slow_validation)
    monkeypatch.setattr(fss.train.time, "perf_counter", lambda: perf_counter() + 3600.0 * hours["passed"])
    config = tiny_config(iterations=4, validation_every=1, batch_size=1, channels=(4, 8), crop_shape=(16, 16, 16))
    metrics = train(config, tmp_path, progress=False, until=2, training=[volume], validation=[volume])
    resumed = train(config, tmp_path, resume=True, progress=False, training=[volume], validation=[volume])
    assert hours["passed"] == 4
    seconds = pd.read_csv(tmp_path / "log.csv")["seconds"]
    assert seconds.is_monotonic_increasing and seconds.iloc[-1] < 3600.0, seconds.tolist()
    assert resumed["seconds"] == seconds.iloc[-1] and metrics["iterations_per_second"] > 1 / 3600 and resumed["iterations_per_second"] > 1 / 3600


def test_training_leaves_the_callers_random_state_and_determinism_flags_alone(tmp_path, monkeypatch):
    volume = ball_volume()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert not torch.are_deterministic_algorithms_enabled()
    config = tiny_config(iterations=2, validation_every=2, channels=(4, 8), deterministic=True, dropout=0.1)
    first = train(config, tmp_path / "a", progress=False, training=[volume], validation=[volume])
    assert torch.equal(torch.get_rng_state(), state), "the global torch seed changed"
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    torch.manual_seed(7)  # another caller state: the run seeds itself
    second = train(config, tmp_path / "b", progress=False, training=[volume], validation=[volume])
    assert pd.read_csv(tmp_path / "a" / "log.csv")["loss"].tolist() == pd.read_csv(tmp_path / "b" / "log.csv")["loss"].tolist()
    assert first["final_mean_dice"] == second["final_mean_dice"]


def test_each_mode_draws_its_batches_from_its_source(tmp_path, monkeypatch):
    volume = ball_volume()
    used = []
    real_sample, synthetic_next = Augmenter.sample, SyntheticBatches.__next__
    monkeypatch.setattr(Augmenter, "sample", lambda self, *args, **kwargs: (used.append("real"), real_sample(self, *args, **kwargs))[1])
    monkeypatch.setattr(SyntheticBatches, "__next__", lambda self: (used.append("synthetic"), synthetic_next(self))[1])
    for mode, expected in (("synthetic", {"synthetic"}), ("real", {"real"}), ("mixed", {"real", "synthetic"})):
        used.clear()
        config = tiny_config(mode=mode, iterations=12, validation_every=12, channels=(4, 8), crop_shape=(16, 16, 16))
        metrics = train(config, tmp_path / mode, progress=False, training=[volume], validation=[volume])
        assert set(used) == expected and len(used) == 12 and metrics["mode"] == mode, (mode, used)


def test_the_network_computes_in_the_precision_asked_and_the_run_records_it(tmp_path):
    volume = ball_volume()
    losses = {}
    for precision in ("float32", "bfloat16"):
        config = tiny_config(iterations=2, validation_every=2, channels=(4, 8), crop_shape=(16, 16, 16), precision=precision)
        metrics = train(config, tmp_path / precision, progress=False, training=[volume], validation=[volume])
        _, metadata = load_checkpoint(tmp_path / precision / "last")
        assert metrics["precision"] == metadata["precision"] == precision and metadata["training"]["precision"] == precision
        losses[precision] = pd.read_csv(tmp_path / precision / "log.csv")["loss"].tolist()
    assert losses["float32"] != losses["bfloat16"]  # bfloat16 rounds the activations: the same batches give other losses
    np.testing.assert_allclose(losses["float32"], losses["bfloat16"], rtol=0.05)
    with pytest.raises(ValueError, match="precision must be one of"):
        tiny_config(precision="half")


def test_loss_and_schedule():
    labels = torch.randint(0, 8, (1, 8, 8, 8))
    perfect = torch.nn.functional.one_hot(labels, 8).permute(0, 4, 1, 2, 3).float() * 20
    assert float(dice_ce_loss(perfect, labels)) < 0.01
    assert float(dice_ce_loss(torch.zeros(1, 8, 8, 8, 8), labels)) > 1
    config = tiny_config(iterations=100, warmup=10, learning_rate=1.0)
    assert learning_rate(config, 0) == pytest.approx(0.1) and learning_rate(config, 9) == pytest.approx((1 - 9 / 100) ** 0.9)
    assert learning_rate(config, 99) < 0.05


def test_configurations(tmp_path):
    demo = TrainConfig.load("cpu-demo", ["iterations=7", "mode=mixed"])
    assert demo.iterations == 7 and demo.mode == "mixed" and demo.spacing == 3.2
    assert TrainConfig.load("gpu").spacing == 0.8
    # coarse to fine: the first stage trains the network of the second on a coarser grid, so that its weights fit
    coarse, fine = TrainConfig.load("cpu-model-coarse"), TrainConfig.load("cpu-model")
    assert coarse.network().config == fine.network().config == TrainConfig.load("cpu-model-real").network().config
    assert coarse.spacing == 2 * fine.spacing and coarse.mode == fine.mode
    for kept in sorted(Path(__file__).parents[1].glob("benchmarks/recipes/*.yaml")):  # earlier recipes still load
        assert TrainConfig.load(kept).spacing == 1.6, kept
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.load("cpu-demo", ["iteration=7"])
    with pytest.raises(ValueError, match="multiples of 8"):
        TrainConfig(crop_shape=(30, 32, 32), channels=(8, 16, 32, 64))
    with pytest.raises(ValueError, match=r"ages \[27\] are both"):
        TrainConfig(training_ages=(26, 27), validation_ages=(27,))


@pytest.mark.slow
def test_two_processes_with_gloo_keep_identical_replicas(mirror, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "fss.cli",
        "train",
        "--config",
        "cpu-demo",
        "--out",
        str(out),
        "--set",
        "iterations=3",
        "--set",
        "validation_every=3",
        "--set",
        "spacing=3.2",
        "--set",
        "crop_shape=[32,32,32]",
        "--set",
        "channels=[4,8]",
        "--set",
        "training_ages=[21,22]",
        "--set",
        "validation_ages=[23]",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["replica_checksums"][0] == metrics["replica_checksums"][1], "replicas drifted apart"


@pytest.mark.parametrize("mode", ["synthetic", "real", "mixed"])
def test_each_rank_draws_its_own_batches_and_a_resumed_stream_its_step(mode):
    volume = ball_volume()
    config = tiny_config(mode=mode, batch_size=1, crop_shape=(16, 16, 16))

    def images(rank: int, start: int, count: int) -> list[torch.Tensor]:
        stream = training_batches(config, [volume], torch.device("cpu"), rank, start)
        return [next(stream)[0] for _ in range(count)]

    rank_0 = images(0, 0, 3)
    assert not torch.equal(rank_0[0], images(1, 0, 1)[0]), "ranks drew the same batch"
    assert torch.equal(images(0, 2, 1)[0], rank_0[2]), "a resumed stream does not continue at its step"
    assert not torch.equal(rank_0[0], rank_0[2]), "a stream repeats itself"


def test_seeds_from_a_folder_are_read_for_their_age_and_brought_to_the_working_grid(mirror, tmp_path):
    record = datasets.fetch_crl_atlas(ages=(31,))[0]
    atlas_labels = record.feta_labels()
    meta = to_meta_labels(np.asarray(atlas_labels.dataobj))
    stripes = np.arange(meta.shape[0])[:, None, None] // 8 % 2  # subclasses no fit would draw: 6.4 mm stripes across the first axis
    layers = {k: {m: np.where(meta == m, 10 * m + stripes * (k - 1), 0).astype(np.uint8) for m in (1, 2, 3)} for k in (1, 2)}
    save_seeds(Seeds(layers, atlas_labels.affine), tmp_path, "crlGA31", "atlas")
    [volume] = prepare_crl((31,), 3.2, with_seeds=True, seeds_dir=str(tmp_path))
    assert volume.seeds.subclass_counts == [1, 2] and volume.seeds.shape == volume.labels.shape
    np.testing.assert_array_equal(volume.seeds.affine, volume.affine)
    working_meta = to_meta_labels(volume.labels)
    for m in (1, 2, 3):
        np.testing.assert_array_equal(volume.seeds.layers[1][m] > 0, working_meta == m)  # seeds and labels resampled alike
        assert set(np.unique(volume.seeds.layers[2][m])) == {0, 10 * m, 10 * m + 1}


def test_validation_volumes_are_the_boxes_and_intensities_that_segment_gives_the_network(mirror, monkeypatch):
    seen = []

    def record(model, image, *args, **kwargs):
        seen.append(torch.as_tensor(image).clone())
        return torch.zeros(8, *image.shape)

    monkeypatch.setattr(fss.infer, "predict_working", record)
    model = UNet(channels=(4, 8, 16, 32))
    record_31 = datasets.fetch_crl_atlas(ages=(31,))[0]
    fss.infer.segment(record_31.image, (model, {"spacing_mm": 3.2}), device="cpu")
    [volume] = prepare_crl((31,), 3.2, with_seeds=False, box_multiple=model.multiple)
    np.testing.assert_array_equal(volume.image, seen[0].numpy())
    whole = prepare_crl((31,), 3.2, with_seeds=False)[0]
    assert volume.image.shape != whole.image.shape  # the box, not the whole field of view
    assert volume.labels.shape == volume.image.shape and (volume.labels > 0).sum() == (whole.labels > 0).sum()


def test_every_training_option_has_a_meaning_and_a_unit():
    assert list(OPTION_DOCS) == [field.name for field in dataclasses.fields(TrainConfig)]
    assert all(meaning and unit for meaning, unit in OPTION_DOCS.values())


def test_overwrite_removes_the_earlier_runs_files_and_resume_refuses_a_stop_already_passed(tmp_path, monkeypatch):
    volume = ball_volume()
    config = tiny_config(iterations=4, validation_every=2, batch_size=1, channels=(4, 8), crop_shape=(16, 16, 16))
    train(config, tmp_path, progress=False, until=3, training=[volume], validation=[volume])
    with pytest.raises(ValueError, match="trained 3 iterations already"):
        train(config, tmp_path, resume=True, until=2, progress=False, training=[volume], validation=[volume])
    train(config, tmp_path, resume=True, progress=False, training=[volume], validation=[volume])
    assert {"metrics.json", "curves.png", "best.json"} <= {p.name for p in tmp_path.iterdir()}
    (tmp_path / "notes.txt").write_text("not the run's")

    def killed(model, volumes):  # the new run stops before its first checkpoint
        raise RuntimeError("killed")

    monkeypatch.setattr(fss.train, "validate", killed)
    with pytest.raises(RuntimeError, match="killed"):
        train(config, tmp_path, overwrite=True, progress=False, training=[volume], validation=[volume])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_folder_holding_files_that_fss_did_not_write_is_left_alone_even_with_overwrite(tmp_path):
    volume = ball_volume()
    config = tiny_config(iterations=2, validation_every=2, batch_size=1, channels=(4, 8), crop_shape=(16, 16, 16))
    users = {"log.csv": "day,weight\n1,3.2\n", "metrics.json": '{"mine": 1}', "curves.png": "a picture"}
    for name, text in users.items():
        (tmp_path / name).write_text(text)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="holds log.csv, curves.png, metrics.json but no training run of fss"):
            train(config, tmp_path, overwrite=overwrite, progress=False, training=[volume], validation=[volume])
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == users


def test_a_second_run_into_a_folder_that_another_process_trains_into_is_refused_before_it_writes(tmp_path):
    volume = ball_volume()
    config = tiny_config(iterations=2, validation_every=2, batch_size=1, channels=(4, 8), crop_shape=(16, 16, 16))
    train(config, tmp_path, progress=False, until=1, training=[volume], validation=[volume])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with locked(tmp_path, wait=False) as held:  # as a running training holds it (flock: another open file is another holder)
        assert held
        for flags in ({"overwrite": True}, {"resume": True}):
            with pytest.raises(FileExistsError, match="another process is training into this folder"):
                train(config, tmp_path, progress=False, training=[volume], validation=[volume], **flags)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    train(config, tmp_path, resume=True, progress=False, training=[volume], validation=[volume])  # once it is free


def test_a_run_can_start_from_another_runs_weights_and_records_it(tmp_path):
    volume = ball_volume()
    options = dict(iterations=2, validation_every=2, channels=(4, 8), crop_shape=(16, 16, 16))
    train(tiny_config(**options), tmp_path / "first", progress=False, training=[volume], validation=[volume])
    first, first_metadata = load_checkpoint(tmp_path / "first" / "last")
    config = tiny_config(**options, seed=5, initialize_from=str(tmp_path / "first" / "last"))
    train(
        dataclasses.replace(config, iterations=4, validation_every=1),
        tmp_path / "second",
        progress=False,
        until=1,
        training=[volume],
        validation=[volume],
    )
    log = pd.read_csv(tmp_path / "second" / "log.csv")
    fresh = tiny_config(**options, seed=5)
    train(fresh, tmp_path / "fresh", progress=False, until=1, training=[volume], validation=[volume])
    assert log["loss"].iloc[0] != pd.read_csv(tmp_path / "fresh" / "log.csv")["loss"].iloc[0]  # other starting weights, same batch
    train(
        dataclasses.replace(config, iterations=4, validation_every=1),
        tmp_path / "second",
        resume=True,
        progress=False,
        training=[volume],
        validation=[volume],
    )
    _, metadata = load_checkpoint(tmp_path / "second" / "last")
    assert metadata["initialized_from"] == {
        "checkpoint": str(tmp_path / "first" / "last"),
        "weights_sha256": first_metadata["weights_sha256"],
        "iterations": 2,
        "spacing_mm": first_metadata["spacing_mm"],
        "training_seconds": first_metadata["training_seconds"],
        "sittings": first_metadata["sittings"],
    }
    with pytest.raises(ValueError, match=r"its network differs from the one configured in channels \(channels \[4, 8\] there, \[8, 8\] here\)"):
        train(dataclasses.replace(config, channels=(8, 8)), tmp_path / "third", progress=False, training=[volume], validation=[volume])


def test_a_diverging_run_stops_and_keeps_its_last_finite_checkpoint(tmp_path):
    volume = ball_volume()
    config = tiny_config(iterations=12, validation_every=1, crop_shape=(16, 16, 16), channels=(4, 8), learning_rate=1e12, warmup=0)
    with pytest.raises(TrainingDiverged, match="at iteration [0-9]+: training diverged") as stopped:
        train(config, tmp_path / "run", progress=False, training=[volume], validation=[volume])
    saved = stopped.value.saved
    assert 0 < saved < stopped.value.iteration <= 12
    model, metadata = load_checkpoint(tmp_path / "run" / "last")
    assert metadata["iterations"] == saved and all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert json.loads((tmp_path / "run" / "last_state.json").read_text())["iteration"] == saved
    assert pd.read_csv(tmp_path / "run" / "log.csv")["iteration"].iloc[-1] == saved


def test_differences_name_each_changed_option_and_count_unrecorded_settings_as_fss_0_1_trained_them():
    trained_with = TrainConfig().to_dict()
    assert TrainConfig().differences(trained_with) == {}
    assert TrainConfig(seed=3, precision="bfloat16").differences(trained_with) == {"precision": ("float32", "bfloat16"), "seed": (0, 3)}
    recorded_by_0_1 = {key: value for key, value in trained_with.items() if key not in ("skip", "initialize_from")}
    assert TrainConfig().differences(recorded_by_0_1) == {}
    assert TrainConfig(skip="add").differences(recorded_by_0_1) == {"skip": ("concatenate", "add")}


UNIT_CONFIG = {"iterations": 6, "validation_every": 2, "batch_size": 1, "channels": [4, 8], "crop_shape": [16, 16, 16]}

KILLED_WHILE_SAVING = """
import json, os, signal, sys
import fss.paths, fss.train
from ball import ball_volume, tiny_config

out, kill_at, config = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
replace, renames = os.replace, 0

def replace_or_die(source, target):  # SIGKILL before the kill_at-th rename of the save of iteration 4
    global renames
    if ".staged-iteration-4" in str(source):
        renames += 1
        if renames == kill_at:
            print(target, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    replace(source, target)

fss.paths.os.replace = replace_or_die
volume = ball_volume()
fss.train.train(tiny_config(**config), out, progress=False, training=[volume], validation=[volume])
"""


@pytest.mark.slow
def test_a_run_killed_at_any_file_of_a_save_resumes_from_its_last_complete_checkpoint(tmp_path):
    volume = ball_volume()
    config = tiny_config(**UNIT_CONFIG)
    train(config, tmp_path / "straight", progress=False, training=[volume], validation=[volume])
    straight, _ = load_checkpoint(tmp_path / "straight" / "last")
    tests = str(Path(__file__).parent)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    killed_at = []
    for kill_at in range(1, 30):  # each rename of the save: the files written in the staging folder, its list, each move
        out = tmp_path / f"killed-{kill_at}"
        arguments = [sys.executable, "-c", KILLED_WHILE_SAVING, str(out), str(kill_at), json.dumps(UNIT_CONFIG)]
        child = subprocess.run(arguments, env=environment, capture_output=True, text=True)
        if child.returncode == 0:  # past the save's last rename
            break
        assert child.returncode == -9, child.stderr[-2000:]
        target = Path(child.stdout.split()[-1])
        killed_at.append(target.name)
        committed = not target.parent.name.startswith(".staged-")  # killed while its files move into place
        kept, said = (4, "was complete when") if committed else (2, "was incomplete when its run stopped and is discarded")
        with pytest.warns(UserWarning, match=f"checkpoint of iteration 4 {said}"):
            train(config, out, resume=True, progress=False, training=[volume], validation=[volume])
        assert not any(path.name.startswith(".staged-") for path in out.iterdir())
        resumed, metadata = load_checkpoint(out / "last")
        assert [sitting["from_iteration"] for sitting in metadata["sittings"]] == [0, kept], target
        assert pd.read_csv(out / "log.csv")["iteration"].tolist() == list(range(1, 7))
        for p, q in zip(straight.parameters(), resumed.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert {"last.safetensors", "last_state.json", "committed.json"} <= set(killed_at) and killed_at.count("last_state.json") == 2, killed_at


def test_a_full_disk_while_saving_names_the_file_and_the_run_resumes_from_the_checkpoint_before(tmp_path, monkeypatch):
    volume = ball_volume()
    config = tiny_config(**UNIT_CONFIG)
    train(config, tmp_path / "straight", progress=False, training=[volume], validation=[volume])
    out = tmp_path / "run"
    save_file = fss.optimization.save_file

    def disk_full_at_iteration_4(tensors, filename, metadata=None):
        if ".staged-iteration-4" in filename:
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')
        save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(fss.optimization, "save_file", disk_full_at_iteration_4)
    with pytest.raises(CheckpointNotSaved) as raised:
        train(config, out, progress=False, training=[volume], validation=[volume])
    assert isinstance(raised.value, OSError)  # the command line's one-line errors
    assert str(raised.value).startswith(f"{out / 'last_state.safetensors'}: the checkpoint of iteration 4 could not be written (Error while")
    assert "No space left on device" in str(raised.value)
    assert str(raised.value).endswith(f"{out} keeps the checkpoint of iteration 2: --resume continues from it once there is room")
    assert sorted(path.name for path in out.iterdir() if path.name.startswith(".")) == []
    assert load_checkpoint(out / "last")[1]["iterations"] == 2 and json.loads((out / "last_state.json").read_text())["iteration"] == 2
    monkeypatch.undo()
    train(config, out, resume=True, progress=False, training=[volume], validation=[volume])
    straight, _ = load_checkpoint(tmp_path / "straight" / "last")
    for p, q in zip(straight.parameters(), load_checkpoint(out / "last")[0].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


TRAIN_TEN_TIMES = """
import sys
from ball import ball_volume, tiny_config
from fss.train import train
out, seed, rounds = sys.argv[1:]
volume = ball_volume()
config = tiny_config(iterations=2, validation_every=2, batch_size=1, channels=(4, 8), crop_shape=(16, 16, 16), seed=int(seed))
for _ in range(int(rounds)):
    try:
        train(config, out, overwrite=True, progress=False, training=[volume], validation=[volume])
    except FileExistsError:  # the other process is training into the folder: this round is refused
        pass
"""


@pytest.mark.slow
def test_two_processes_training_into_one_folder_never_mix_their_runs(tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}

    def start(out: Path, seed: int, rounds: int) -> subprocess.Popen:
        arguments = [sys.executable, "-c", TRAIN_TEN_TIMES, str(out), str(seed), str(rounds)]
        return subprocess.Popen(arguments, env=environment, stderr=subprocess.PIPE, text=True)

    def finished(child: subprocess.Popen) -> None:
        assert child.wait(timeout=600) == 0, child.stderr.read()[-2000:]

    def weights(path: Path) -> dict:  # the tensors' bytes: the file's header records the run, its time and its machine
        return {name: tensor.numpy().tobytes() for name, tensor in load_file(path).items()}

    alone = {}
    for seed in (1, 2):
        finished(start(tmp_path / f"alone-{seed}", seed, 1))
        alone[seed] = {name: weights(tmp_path / f"alone-{seed}" / name) for name in ("last.safetensors", "best.safetensors")}
    assert alone[1] != alone[2]  # the two seeds give two runs, so that a mixture shows
    out = tmp_path / "out"
    for child in [start(out, 1, 10), start(out, 2, 10)]:
        finished(child)
    seed = json.loads((out / "last.json").read_text())["training"]["seed"]
    assert {name: weights(out / name) for name in alone[seed]} == alone[seed]
    run_id = json.loads((out / "last.json").read_text())["run_id"]
    assert json.loads((out / "best.json").read_text())["run_id"] == run_id == json.loads((out / "last_state.json").read_text())["run_id"]
    assert pd.read_csv(out / "log.csv").iteration.tolist() == [1, 2]
