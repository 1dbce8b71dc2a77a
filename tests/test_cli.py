import dataclasses
import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from ball import ball_volume, tiny_config
from scans import bids, label_folders, scan

import fss.device
import fss.metrics
import fss.train
import fss.viz
from fss import datasets, pretrained
from fss.batch import qc_title
from fss.bids import update_table
from fss.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from fss.cli import main
from fss.device import resolve_device
from fss.infer import segment
from fss.io import load_nifti
from fss.labels import to_feta
from fss.metrics import tissue_volumes
from fss.paths import claimed, locked
from fss.run_control import TrainingDiverged, TrainingInterrupted
from fss.seeds import write_seeds
from fss.synth import Generator, GeneratorConfig, SynthSubject, load_config, preset
from fss.train import train


def test_fetch_all_verifies_and_credits(mirror, capsys):
    assert main(["fetch", "--all", "--data-dir", str(mirror)]) == 0
    out = capsys.readouterr().out
    assert f"{len(datasets.registry())} files verified in {mirror}" in out
    assert out.count("Cite:") == 3 and "Gholipour" in out and "Zalevskyi" in out


def test_fetch_one_family(mirror, capsys):
    assert main(["fetch", "crl", "--ages", "23", "35"]) == 0
    out = capsys.readouterr().out
    assert "crl-GA23" in out and "crl-GA35" in out and "crl-GA30" not in out


def test_fetch_errors_exit_non_zero_with_a_message(tmp_path, capsys):
    assert main(["fetch", "wu", "--ages", "30", "--data-dir", str(tmp_path)]) == 1
    assert "could not be downloaded" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fetch", "atlas-of-mars"])
    assert "unknown: atlas-of-mars" in capsys.readouterr().err
    assert main(["fetch", "crl", "--ages", "30", "99", "--data-dir", str(tmp_path)]) == 2
    assert "--ages: the crl atlas has no ages [99] (it has 21-38 weeks)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fetch"])


def test_info(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "device" in out
    assert f"{tmp_path} ($FSS_DATA; 0 of {len(datasets.registry())} registered files present)" in out


# The command line against careless and hostile use: nothing lost, nothing silently wrong.
#
# | case | test |
# | --- | --- |
# | segment into the raw BIDS dataset itself, or into a raw dataset's folder | test_segment_never_writes_into_a_raw_dataset |
# | an output (label map, table, QC picture) that is one of the inputs, even with --overwrite | test_no_command_writes_over_its_inputs |
# | a second synth set written over a first one, or into the folder while another fss synth writes there | test_a_samples_folder_holds_one_set |
# | `fss synth` interrupted, then run again | test_an_interrupted_synth_run_is_continued_by_a_rerun |
# | two runs into one folder: the table keeps the rows of both | test_volumes_table_is_updated_by_image |
# | three processes updating one 3000-row table at once | test_processes_updating_one_table_at_once_keep_every_row |
# | `fss evaluate -o` an existing folder, `results.v2/`, `m.csv`, `/dev/null` (with --overwrite) | test_evaluate_refuses_an_output_that_is_not_a_tsv_file |
# | a volumes.tsv of the user's (other columns, no segmentation column, not a table) in the output folder | test_a_volumes_table_fss_did_not_write_is_refused_and_left_as_it_is |
# | rows already in volumes.tsv ("007", "1.50") after an update | test_rows_already_in_the_table_are_kept_as_written |
# | `fss train --out` a folder holding the user's log.csv, metrics.json, curves.png, with or without --overwrite | test_a_folder_holding_files_that_fss_did_not_write_is_left_alone_even_with_overwrite (test_train.py) |
# | another run's last_state.safetensors (same network) copied into a run, then resumed | test_resume_refuses_mismatched_state_and_settings |
# | two `fss train --out` into one folder at once (--overwrite, --resume) | test_a_second_run_into_a_folder_that_another_process_trains_into_is_refused_before_it_writes (test_train.py) |
# | a second experiment runner while a run is running | test_a_run_that_another_process_is_running_is_left_alone (test_experiments.py) |
# | an experiment's results made by other notebook code or another fss | test_a_run_made_by_other_notebook_code_is_stale_left_out_and_run_again (test_experiments.py) |
# | two inputs of one name into one folder | test_two_inputs_of_one_name_are_refused |
# | a file-like -o for several inputs, a non-NIfTI -o, QC beside x.nii | test_output_names_are_checked |
# | resume after a kill between checkpoint and state; resume with other settings; another network's, another run's or a broken last_state.safetensors | test_resume_refuses_mismatched_state_and_settings |
# | seeds from fss's own segmentations in derivatives/ | test_seeds_take_label_maps_only_from_the_named_place |
# | evaluate folders pair by name only; references in the atlas convention | test_evaluate_pairs_folders_by_name_and_reads_conventions |
# | evaluate label maps of one shape and other affines | test_evaluate_names_the_affines_when_only_they_differ |
# | evaluate folders where one pair has other shapes; the mean over tissues | test_evaluate_goes_on_past_a_pair_that_fails_and_prints_the_mean_over_tissues |
# | atlas labels evaluated as FeTA, with label 8 or with 8 merged into 1 | test_evaluate_names_the_file_and_the_convention_that_fits |
# | `fss seeds --convention atlas` on FeTA labels (most voxels change tissue) | test_seeds_warn_when_another_label_convention_fits_the_image |
# | one image given twice to `fss segment`; an input given as <(cat x.nii.gz), or a folder named .nii.gz | test_two_inputs_of_one_name_are_refused, test_unreadable_and_missing_files (test_io.py) |
# | two `fss segment` of different scans into one label map at once, ten times each | test_two_processes_segmenting_into_one_output_never_mix_their_files, test_an_output_another_process_is_segmenting_is_left_to_it |
# | two `fss synth` of different seeds into one folder at once, ten times each | test_two_processes_writing_samples_into_one_folder_never_mix_their_sets |
# | `fss seeds` of a subject whose seeds another process is writing | test_a_subject_whose_seeds_another_process_writes_is_left_to_it |
# | a constant image, 1e-5 mm slices, no orientation codes, qform and sform that disagree | test_unusable_scans_are_refused_and_doubtful_ones_warned |
# | configuration values of the wrong type or range (empty age lists, spacing 0.01 or 100 mm, one level), YAML that is not a mapping or not YAML | test_bad_configurations_are_refused_before_anything_runs |
# | `--set learning_rate=1e-3` (a string to YAML 1.1) | test_numbers_in_exponent_notation_are_numbers |
# | a configuration file that is not UTF-8 | test_a_configuration_file_that_is_not_utf8_is_named |
# | --max-subclasses beyond the seed layout, an empty label map, a subject label that leaves the folder | test_seeds_refuse_what_the_layout_cannot_hold |
# | a working grid or an output too large for the memory | test_memory_is_estimated_before_work_starts |
# | unknown and missing devices | test_devices_are_checked |
# | both label maps empty in evaluate | test_evaluate_of_empty_label_maps_writes_nan |
# | a forged checkpoint whose architecture has other keys | test_a_checkpoint_with_other_architecture_keys_is_refused |
# | a scan smaller than the network's receptive box | test_a_tiny_scan_is_segmented |
# | a checkpoint without spacing_mm, a pickle renamed .safetensors with a matching hash | test_checkpoints_without_a_spacing_or_with_pickled_weights_are_refused_in_one_line |
# | `--checkpoint fss-real-cpu` (a packaged model's name), an unknown `--model` | test_packaged_models_are_chosen_by_name |
# | a file shorter than its header says | test_a_truncated_file_is_named |
# | a sidecar whose planned files lie outside the output folder (`..`, absolute), with --overwrite | test_a_record_naming_files_elsewhere_deletes_nothing_there |
# | a QC picture of fss replaced by the user's own, then --overwrite without --qc | test_a_picture_that_replaced_fss_s_own_is_not_deleted_as_stale |
# | a seeds stem that leads out of the seeds folder | test_a_record_naming_files_elsewhere_deletes_nothing_there |
# | `fss train --resume --overwrite` (one of them was ignored) | test_train_refuses_resume_and_overwrite_together |
# | fields a user added to fss's dataset description (Authors, SourceDatasets, Name) | test_cli_on_a_bids_folder (test_infer.py) |
# | a BIDS image stored as `_T2w.nii` (valid BIDS), and its `_dseg.nii` | test_uncompressed_bids_images_and_label_maps_are_found_as_the_compressed_ones (test_infer.py) |
# | a missing input, with a file or a folder as output; in evaluate | test_a_missing_input_is_named_and_nothing_is_written |
# | Ctrl-C during training | test_an_interrupt_saves_the_training_state_and_says_how_to_resume |
# | SIGKILL while a checkpoint, its optimizer state or the log is written, or while they move into place | test_a_run_killed_while_saving_resumes_from_its_last_complete_checkpoint (test_train.py) |
# | a full disk while a checkpoint is saved | test_a_full_disk_while_saving_names_the_file_and_the_run_resumes_from_the_checkpoint_before (test_train.py) |
# | two Ctrl-C 0.02 s apart, during a step or during a save | test_a_second_interrupt_stops_at_once_but_lets_a_save_finish |
# | a learning rate of 1e12: the loss becomes NaN | test_a_diverging_run_stops_and_keeps_its_last_finite_checkpoint (test_train.py), test_a_diverged_training_exits_1_and_says_what_is_kept |
# | a float64 scan times 1e36, beyond float32; an RGB NIfTI in a batch | test_cli_reports_each_bad_input_and_segments_the_others (test_infer.py) |
# | experiment arms `a b` and `a_b`, an arm setting `seed`, `output_dir` in the parameters, `chain: 03_training`, `settings: {s1: 5}` | test_experiment_files_that_the_runner_would_misread_are_refused (test_experiments.py) |
# | Ctrl-C during `fss experiment` | test_ctrl_c_during_an_experiment_is_one_line_and_exit_130 (test_experiments.py) |
# | text in a run's metrics.tsv, an empty one; `--only` naming no run | test_a_results_table_that_cannot_be_read_is_named (test_experiments.py) |
# | `fss fetch crl --ages 99` | test_fetch_errors_exit_non_zero_with_a_message |
# | a checkpoint whose weights are NaN | test_a_network_with_weights_that_are_not_finite_is_refused (test_infer.py) |
# | --overwrite over a finished run, stopped early; --resume --until an iteration already passed | test_overwrite_removes_the_earlier_runs_files_and_resume_refuses_a_stop_already_passed (test_train.py) |
# | hidden temporary files left by a killed write | test_leftover_temporary_files_are_ignored_and_cleaned |
# | another process's write in progress to the same file | test_a_write_in_progress_elsewhere_keeps_its_temporary_file_and_a_dead_ones_is_removed (test_io.py) |
# | an unexpected error | test_an_unexpected_error_is_one_line_unless_debugging |
# | probabilities, sliding window and overlap from the command line | test_segment_writes_probabilities_and_takes_a_window |
# | `--window 32 --overlap 0.999`: hours of windows | test_a_window_and_overlap_that_would_run_for_hours_are_refused_before_any_window (test_infer.py) |
# | segment, synth, train, experiment, evaluate or seeds writing into a raw BIDS dataset, or into another pipeline's derivative | test_no_command_writes_into_a_raw_dataset_or_another_pipelines_derivative |
# | `-o bids/derivatives/manual` (a folder without description that fss did not create), `-o bids/derivatives`; every command into a folder it created there, twice | test_a_derivative_folder_is_fss_s_only_when_fss_created_it |
# | a manual label map or another tool's QC picture where fss would write, with or without --overwrite | test_segment_never_replaces_or_adopts_a_file_it_did_not_write |
# | another scan of the same name, other options, another spelling of the output, a hand-corrected output | test_kept_means_the_same_input_model_and_options |
# | a full disk while the QC picture is written, a file of a finished output deleted | test_an_output_is_finished_only_when_all_its_files_are |
# | fss's own segmentation copied elsewhere and given to fss seeds | test_seeds_refuse_label_maps_that_fss_segmented_wherever_they_are |


def test_segment_never_writes_into_a_raw_dataset(tmp_path, checkpoint, capsys):
    root = bids(tmp_path)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert main(["segment", str(root), "-o", str(root), "--checkpoint", str(checkpoint), "--overwrite"]) == 2
    assert "is the input dataset itself" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "dataset_description.json").write_text('{"Name": "another raw dataset", "BIDSVersion": "1.9.0"}')
    assert main(["segment", str(root), "-o", str(other), "--checkpoint", str(checkpoint), "--overwrite"]) == 2
    assert "raw BIDS dataset" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in other.iterdir()) == ["dataset_description.json"]


def test_no_command_writes_over_its_inputs(tmp_path, checkpoint, capsys):
    nib.save(scan(), tmp_path / "x.nii.gz")
    original = (tmp_path / "x.nii.gz").read_bytes()
    assert main(["segment", str(tmp_path / "x.nii.gz"), "-o", str(tmp_path / "." / "x.nii.gz"), "--checkpoint", str(checkpoint), "--overwrite"]) == 2
    assert "is also an input" in capsys.readouterr().err
    labels = tmp_path / "p.nii.gz"
    assert main(["segment", str(tmp_path / "x.nii.gz"), "-o", str(labels), "--checkpoint", str(checkpoint)]) == 0
    kept = labels.read_bytes()
    assert main(["evaluate", str(labels), str(labels), "-o", str(labels), "--overwrite"]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert (tmp_path / "x.nii.gz").read_bytes() == original and labels.read_bytes() == kept


def test_a_samples_folder_holds_one_set(tmp_path, capsys):
    seeds_root = tmp_path / "seeds"
    volume = ball_volume()
    write_seeds(
        nib.Nifti1Image(volume.image.astype(np.float32), volume.affine),
        nib.Nifti1Image(volume.labels, volume.affine),
        seeds_root,
        "sub-ball",
        "sub-ball_dseg",
        "feta",
        4,
        0,
    )
    out = tmp_path / "samples"
    synth = ["synth", "--seeds", str(seeds_root), "--out", str(out), "--device", "cpu"]
    assert main([*synth, "--n", "0", "--overwrite"]) == 2 and "at least 1" in capsys.readouterr().err
    assert main([*synth, "--n", "1", "--seed", "-1"]) == 2 and "must not be negative" in capsys.readouterr().err
    assert not out.exists()
    assert main([*synth, "--n", "3"]) == 0
    config = (out / "synth_config.yaml").read_text()
    assert main([*synth, "--n", "2", "--config", "literal"]) == 1
    assert "another set: its configuration differs" in capsys.readouterr().err and (out / "synth_config.yaml").read_text() == config
    assert main([*synth, "--n", "3", "--seed", "1"]) == 1 and "its seed differs" in capsys.readouterr().err
    assert main([*synth, "--n", "2"]) == 1 and "up to sub-synth0002, more than the 2 asked for" in capsys.readouterr().err
    assert main([*synth, "--n", "2", "--config", "literal", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["sub-synth0000", "sub-synth0001", "synth_config.yaml", "synth_set.json"]
    assert load_config(out / "synth_config.yaml") == load_config("literal")
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    with locked(out, wait=False):  # as a second fss synth writing into it holds it
        assert main([*synth, "--n", "2", "--config", "literal", "--seed", "1", "--overwrite"]) == 1
    assert "another process is writing samples into this folder" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_an_interrupted_synth_run_is_continued_by_a_rerun(tmp_path, capsys):
    seeds_root = tmp_path / "seeds"
    volume = ball_volume()
    image, labels = nib.Nifti1Image(volume.image.astype(np.float32), volume.affine), nib.Nifti1Image(volume.labels, volume.affine)
    write_seeds(image, labels, seeds_root, "sub-ball", "sub-ball_dseg", "feta", 4, 0)
    out = tmp_path / "samples"
    synth = ["synth", "--seeds", str(seeds_root), "--out", str(out), "--device", "cpu"]
    assert main([*synth, "--n", "3"]) == 0
    whole = {path.relative_to(out): path.read_bytes() for path in sorted(out.rglob("sub-synth*/anat/*"))}
    first_sample_time = (out / "sub-synth0000" / "anat" / "sub-synth0000_T2w.nii.gz").stat().st_mtime_ns
    # as if stopped while writing sample 1 (its JSON, written last, is missing) before sample 2
    (out / "sub-synth0001" / "anat" / "sub-synth0001_params.json").unlink()
    shutil.rmtree(out / "sub-synth0002")
    capsys.readouterr()
    assert main([*synth, "--n", "3"]) == 0
    assert "1 of them kept" in capsys.readouterr().out
    assert {path.relative_to(out): path.read_bytes() for path in sorted(out.rglob("sub-synth*/anat/*"))} == whole
    assert (out / "sub-synth0000" / "anat" / "sub-synth0000_T2w.nii.gz").stat().st_mtime_ns == first_sample_time
    assert main([*synth, "--n", "4"]) == 0
    assert "3 of them kept" in capsys.readouterr().out and (out / "sub-synth0003" / "anat" / "sub-synth0003_params.json").exists()


def test_volumes_table_is_updated_by_image(tmp_path, checkpoint):
    for name in ("a", "b"):
        nib.save(scan(seed=ord(name)), tmp_path / f"{name}.nii.gz")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "a.nii.gz"), "-o", str(out / "a_dseg.nii.gz"), "--checkpoint", str(checkpoint)]) == 0
    assert main(["segment", str(tmp_path / "b.nii.gz"), "-o", str(out / "b_dseg.nii.gz"), "--checkpoint", str(checkpoint)]) == 0
    table = pd.read_csv(out / "volumes.tsv", sep="\t")
    assert sorted(table.image) == ["a.nii.gz", "b.nii.gz"]
    assert main(["segment", str(tmp_path / "b.nii.gz"), "-o", str(out / "b_dseg.nii.gz"), "--checkpoint", str(checkpoint), "--overwrite"]) == 0
    assert sorted(pd.read_csv(out / "volumes.tsv", sep="\t").image) == ["a.nii.gz", "b.nii.gz"]


@pytest.mark.parametrize(
    "users_table",
    ["segmentation\tsubject\tscanner_id\nx.nii.gz\tsub-01\t007\n", "subject\tvolume\nsub-01\t12\n", "\u0000\u00ff binary\n"],
    ids=["with a segmentation column", "without one", "not a table"],
)
def test_a_volumes_table_fss_did_not_write_is_refused_and_left_as_it_is(tmp_path, checkpoint, capsys, users_table):
    nib.save(scan(), tmp_path / "x.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "volumes.tsv").write_text(users_table)
    assert main(["segment", str(tmp_path / "x.nii.gz"), "-o", str(out / "x_dseg.nii.gz"), "--checkpoint", str(checkpoint)]) == 2
    assert "volumes.tsv: not a table fss wrote" in capsys.readouterr().err
    assert (out / "volumes.tsv").read_text() == users_table and sorted(p.name for p in out.iterdir()) == ["volumes.tsv"]


def test_rows_already_in_the_table_are_kept_as_written(tmp_path):
    table = tmp_path / "volumes.tsv"
    table.write_text("image\tsegmentation\tWM_mm3\na\t/out/a.nii.gz\t1.50\n007\t/out/007.nii.gz\t\n")
    update_table(table, [{"image": "b", "segmentation": "/out/b.nii.gz", "WM_mm3": 2.0}], key="segmentation")
    assert table.read_text().splitlines() == [
        "image\tsegmentation\tWM_mm3",
        "a\t/out/a.nii.gz\t1.50",
        "007\t/out/007.nii.gz\t",
        "b\t/out/b.nii.gz\t2.0",
    ]


def test_processes_updating_one_table_at_once_keep_every_row(tmp_path):
    table = tmp_path / "volumes.tsv"
    pd.DataFrame({"segmentation": [f"old{i}" for i in range(3000)], "WM": 1.0}).to_csv(table, sep="\t", index=False)
    update = (
        "import sys; from pathlib import Path; from fss.bids import update_table\n"
        "for i in range(15):\n"
        "    update_table(Path(sys.argv[1]), [{'segmentation': f'{sys.argv[2]}{i}', 'WM': 2.0}], key='segmentation')\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", update, str(table), name], stderr=subprocess.PIPE, text=True) for name in ("a", "b", "c")]
    errors = [writer.communicate()[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0, 0], errors
    rows = pd.read_csv(table, sep="\t").segmentation
    assert len(rows) == 3045 and rows.is_unique
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volumes.tsv"]  # no lock file, no temporary file left


def test_two_inputs_of_one_name_are_refused(tmp_path, checkpoint, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        nib.save(scan(), tmp_path / folder / "scan.nii.gz")
    out = tmp_path / "out"
    assert (
        main(["segment", str(tmp_path / "a" / "scan.nii.gz"), str(tmp_path / "b" / "scan.nii.gz"), "-o", str(out), "--checkpoint", str(checkpoint)])
        == 2
    )
    assert "would all be written to one label map" in capsys.readouterr().err and not out.exists()
    twice = [str(tmp_path / "a" / "scan.nii.gz"), str(tmp_path / "a" / ".." / "a" / "scan.nii.gz")]
    assert main(["segment", *twice, "-o", str(out), "--checkpoint", str(checkpoint)]) == 2
    assert f"{twice[0]} is given 2 times; give each image once" in capsys.readouterr().err and not out.exists()


def test_output_names_are_checked(tmp_path, checkpoint, capsys):
    for name in ("a", "b"):
        nib.save(scan(), tmp_path / f"{name}.nii.gz")
    inputs = [str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")]
    assert main(["segment", *inputs, "-o", str(tmp_path / "y.nii.gz"), "--checkpoint", str(checkpoint)]) == 2
    assert "looks like a file name" in capsys.readouterr().err and not (tmp_path / "y.nii.gz").exists()
    assert main(["segment", inputs[0], "-o", str(tmp_path / "x.mgz"), "--checkpoint", str(checkpoint)]) == 2
    assert "end the name in .nii.gz or .nii" in capsys.readouterr().err and not (tmp_path / "x.mgz").exists()
    assert main(["segment", inputs[0], "-o", str(tmp_path / "x.nii"), "--checkpoint", str(checkpoint), "--qc"]) == 0
    assert (tmp_path / "x_qc.png").exists() and not (tmp_path / "x.nii_qc.png").exists()


def test_qc_title_gives_the_brain_without_the_extra_axial_csf():
    labels = np.zeros((40, 40, 40), np.int16)  # 1 mm voxels: 1000 voxels a millilitre
    labels.reshape(-1)[:10000] = 1  # extra-axial CSF, 10 ml
    labels.reshape(-1)[10000:40000] = 3  # white matter, 30 ml
    title = qc_title("x.nii.gz", "fss-synth-cpu", {"spacing_mm": 1.6}, tissue_volumes(nib.Nifti1Image(labels, np.eye(4))))
    assert "brain 30 ml (without the extra-axial CSF), extra-axial CSF 10 ml" in title
    assert title.startswith("x.nii.gz\nfss-synth-cpu: training not recorded at 1.6 mm\n")


def test_resume_refuses_mismatched_state_and_settings(tmp_path, capsys):
    volume = ball_volume()
    config = tiny_config(iterations=4, validation_every=2, crop_shape=(16, 16, 16), channels=(4, 8))
    out = tmp_path / "run"
    train(config, out, progress=False, until=2, training=[volume], validation=[volume])
    changed = dataclasses.replace(config, learning_rate=0.5, channels=(8, 16))
    with pytest.raises(ValueError, match=r"channels: \[4, 8\] then, \[8, 16\] now; learning_rate: 0.01 then, 0.5 now"):
        train(changed, out, resume=True, progress=False, training=[volume], validation=[volume])
    state = json.loads((out / "last_state.json").read_text())
    (out / "last_state.json").write_text(json.dumps({**state, "iteration": 1}))  # edited by hand: a killed save leaves no such mixture
    with pytest.raises(ValueError, match="disagree"):
        train(config, out, resume=True, progress=False, training=[volume], validation=[volume])
    (out / "last_state.json").write_text(json.dumps(state))
    train(dataclasses.replace(config, channels=(8, 16)), tmp_path / "other", progress=False, until=2, training=[volume], validation=[volume])
    shutil.copy(tmp_path / "other" / "last_state.safetensors", out / "last_state.safetensors")  # another network's optimizer state
    with pytest.raises(ValueError, match="last_state.safetensors: not the optimizer state of this run's network"):
        train(config, out, resume=True, progress=False, training=[volume], validation=[volume])
    (out / "last_state.safetensors").write_text("index,value\n0,1\n")
    with pytest.raises(ValueError, match="last_state.safetensors: not a safetensors file"):
        train(config, out, resume=True, progress=False, training=[volume], validation=[volume])
    train(config, tmp_path / "same network", progress=False, until=2, training=[volume], validation=[volume])
    shutil.copy(tmp_path / "same network" / "last_state.safetensors", out / "last_state.safetensors")  # another run's, same network
    with pytest.raises(ValueError, match="last_state.safetensors: saved by run [0-9a-f]{32}, not by run [0-9a-f]{32} .* copied from another run"):
        train(config, out, resume=True, progress=False, training=[volume], validation=[volume])
    shutil.copy(tmp_path / "same network" / "last_state.json", out / "last_state.json")
    shutil.copy(tmp_path / "same network" / "last_state.safetensors", out / "last_state.safetensors")
    with pytest.raises(ValueError, match="saved by run"):  # both files of the other run: still not this checkpoint's
        train(config, out, resume=True, progress=False, training=[volume], validation=[volume])


def test_evaluate_pairs_folders_by_name_and_reads_conventions(tmp_path, capsys):
    feta = np.zeros((8, 8, 8), np.int16)
    feta[2:6, 2:6, 2:6] = 3  # white matter in FeTA
    for folder, name, labels in (
        ("pred", "sub-01_dseg.nii.gz", feta),
        ("ref", "sub-02_dseg.nii.gz", feta),
        ("atlas", "sub-01_dseg.nii.gz", np.where(feta > 0, 1, 0).astype(np.int16)),
    ):
        (tmp_path / folder).mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / folder / name)
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(tmp_path / "m.tsv")]) == 1
    captured = capsys.readouterr()
    assert "no counterpart" in captured.out and "no label maps of the same name" in captured.err
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "atlas"), "-o", str(tmp_path / "m.tsv"), "--convention", "atlas"]) == 0
    table = pd.read_csv(tmp_path / "m.tsv", sep="\t")
    assert table[(table.tissue == "WM") & (table.metric == "dice")].value.item() == 1.0  # atlas label 1 is FeTA 3


def test_evaluate_names_the_affines_when_only_they_differ(tmp_path, capsys):
    labels = np.zeros((8, 8, 8), np.int16)
    labels[2:6, 2:6, 2:6] = 2
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "p.nii.gz")
    nib.save(nib.Nifti1Image(labels, shifted), tmp_path / "r.nii.gz")
    assert main(["evaluate", str(tmp_path / "p.nii.gz"), str(tmp_path / "r.nii.gz"), "-o", str(tmp_path / "m.tsv")]) == 1
    assert "p.nii.gz: failed: p.nii.gz: prediction and reference have the same shape but different affines (differing by up to 2 mm)" in (
        capsys.readouterr().out
    )
    assert not (tmp_path / "m.tsv").exists()


def test_evaluate_goes_on_past_a_pair_that_fails_and_prints_the_mean_over_tissues(tmp_path, capsys):
    feta = np.zeros((8, 8, 8), np.int16)
    feta[2:6, 2:6, 2:6] = 3
    feta[2:6, 2:6, 2:4] = 2
    for folder in ("pred", "ref"):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(feta, np.eye(4)), tmp_path / folder / "a_dseg.nii.gz")
    nib.save(nib.Nifti1Image(feta, np.eye(4)), tmp_path / "pred" / "b_dseg.nii.gz")
    nib.save(nib.Nifti1Image(feta[:6], np.eye(4)), tmp_path / "ref" / "b_dseg.nii.gz")  # another shape
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(tmp_path / "m.tsv")]) == 1
    printed = capsys.readouterr().out
    assert "b_dseg.nii.gz: failed: b_dseg.nii.gz: prediction and reference are on different grids" in printed
    assert "1 of 2 pair(s) failed: b_dseg.nii.gz" in printed
    summary = next(line for line in printed.splitlines() if line.startswith("mean "))
    assert summary.split()[1] == "1.0"  # the Dice over tissues present in either map
    table = pd.read_csv(tmp_path / "m.tsv", sep="\t")
    assert set(table.case) == {"a_dseg.nii.gz"} and table[(table.tissue == "mean") & (table.metric == "dice")].value.item() == 1.0


def test_evaluate_names_the_file_and_the_convention_that_fits(tmp_path, capsys):
    atlas = np.zeros((8, 8, 8), np.int16)
    atlas[2:6, 2:6, 2:6] = 1  # atlas white matter (FeTA 3)
    atlas[2:6, 2:6, 2:3] = 5  # atlas cortex (FeTA 2)
    atlas[2:6, 2:4, 5:6] = 8  # corpus callosum (FeTA white matter)
    feta = to_feta(atlas, "atlas")
    nib.save(nib.Nifti1Image(feta, np.eye(4)), tmp_path / "pred.nii.gz")
    nib.save(nib.Nifti1Image(atlas, np.eye(4)), tmp_path / "atlaslab.nii.gz")
    nib.save(nib.Nifti1Image(np.where(atlas == 8, 1, atlas).astype(np.int16), np.eye(4)), tmp_path / "merged.nii.gz")  # 8 merged into 1
    evaluate = ["evaluate", str(tmp_path / "pred.nii.gz")]
    assert main([*evaluate, str(tmp_path / "atlaslab.nii.gz"), "-o", str(tmp_path / "m.tsv")]) == 1
    assert f"{tmp_path / 'atlaslab.nii.gz'}: label map holds values [8]" in (printed := capsys.readouterr().out)
    assert "it fits the 'atlas' convention: --convention atlas" in printed
    assert main([*evaluate, str(tmp_path / "merged.nii.gz"), "-o", str(tmp_path / "m.tsv")]) == 0
    assert (
        "warning: " in (printed := capsys.readouterr().out)
        and "in the 'atlas' convention at 1.00: is it in that one? (--convention atlas)" in printed
    )
    assert main([*evaluate, str(tmp_path / "merged.nii.gz"), "-o", str(tmp_path / "m.tsv"), "--convention", "atlas", "--overwrite"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_seeds_take_label_maps_only_from_the_named_place(tmp_path, checkpoint, capsys):
    root = bids(tmp_path)
    assert main(["segment", str(root), "-o", str(root / "derivatives" / "fss"), "--checkpoint", str(checkpoint)]) == 1  # sub-03 is NaN
    capsys.readouterr()
    assert main(["seeds", str(root), "--out", str(tmp_path / "seeds")]) == 0  # no label map beside the images: nothing taken from fss
    printed = capsys.readouterr().out
    assert "sub-01_T2w.nii.gz: no label map found beside it" in printed and "seeds of 0 of 0 subjects" in printed
    assert main(["seeds", str(root), "--labels-from", "derivatives/fss", "--out", str(tmp_path / "seeds")]) == 1
    assert "holds segmentations made by fss" in capsys.readouterr().err
    manual = root / "derivatives" / "manual" / "sub-01" / "anat"
    manual.mkdir(parents=True)
    volume = ball_volume()
    nib.save(nib.Nifti1Image(volume.image.astype(np.float32), volume.affine), root / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    nib.save(nib.Nifti1Image(volume.labels, volume.affine), manual / "sub-01_dseg.nii.gz")
    assert main(["seeds", str(root), "--labels-from", "derivatives/manual", "--out", str(tmp_path / "seeds"), "--max-subclasses", "2"]) == 0
    assert f"labels {manual / 'sub-01_dseg.nii.gz'}" in capsys.readouterr().out


def test_unusable_scans_are_refused_and_doubtful_ones_warned(tmp_path, checkpoint, capsys):
    good = scan()
    cases = {
        "constant": (nib.Nifti1Image(np.full((20, 20, 20), 7.0, np.float32), np.eye(4)), "the image is constant"),
        "thin": (nib.Nifti1Image(np.asarray(good.dataobj), np.diag([1.0, 1.0, 1e-5, 1.0])), "outside the 0.1-10.0 mm"),
        "huge": (nib.Nifti1Image(np.asarray(good.dataobj), np.diag([80.0, 80.0, 80.0, 1.0])), "outside the 0.1-10.0 mm"),
    }
    for name, (image, _) in cases.items():
        nib.save(image, tmp_path / f"{name}.nii.gz")
    unoriented = nib.Nifti1Image(np.asarray(good.dataobj), None)
    nib.save(unoriented, tmp_path / "unoriented.nii.gz")
    cases["unoriented"] = (unoriented, "gives no orientation")
    for name, (_, reason) in cases.items():
        assert main(["segment", str(tmp_path / f"{name}.nii.gz"), "-o", str(tmp_path / f"{name}_dseg.nii.gz"), "--checkpoint", str(checkpoint)]) == 1
        assert reason in capsys.readouterr().out, name
    disagreeing = nib.Nifti1Image(np.asarray(good.dataobj), good.affine)
    qform = good.affine.copy()
    qform[0, 3] += 5.0
    disagreeing.set_qform(qform, code=1)
    nib.save(disagreeing, tmp_path / "disagree.nii.gz")
    with pytest.warns(UserWarning, match="sform and the qform of the header differ by up to 5 mm; fss uses the sform"):
        assert (
            main(["segment", str(tmp_path / "disagree.nii.gz"), "-o", str(tmp_path / "disagree_dseg.nii.gz"), "--checkpoint", str(checkpoint)]) == 0
        )


@pytest.mark.parametrize(
    "options, reason",
    [
        (["--set", "iterations=-1"], "iterations must be at least 1"),
        (["--set", "validation_every=0"], "validation_every must be at least 1"),
        (["--set", "iterations=abc"], "iterations must be a whole number, got 'abc'"),
        (["--set", "learning_rate=fast"], "learning_rate must be a number"),
        (["--set", "generator={flip: {enabled: 'no'}}"], "flip: enabled must be true or false, got 'no'"),
        (["--set", "generator={gamma: {gamma_std: -1}}"], "gamma_std must not be negative"),
        (["--set", "validation_ages=[19]"], "the CRL atlas has no ages [19]"),
        (["--set", "device=foo"], "unknown device 'foo'"),
        (["--set", "training_ages=[]"], "training_ages is empty"),
        (["--set", "validation_ages=[]"], "validation_ages is empty"),
        (["--set", "spacing=0.01"], "spacing 0.01 mm is outside 0.5-5.0 mm"),
        (["--set", "spacing=100"], "spacing 100 mm is outside 0.5-5.0 mm"),
        (["--set", "channels=[4]"], "for at least two levels, got [4]"),
        (["--set", "iterations=[1"], "--set iterations=[1: not valid YAML"),
        (["--set", "learning_rate"], "--set 'learning_rate': expected key=value"),
    ],
)
def test_bad_configurations_are_refused_before_anything_runs(tmp_path, capsys, options, reason):
    out = tmp_path / "run"
    assert main(["train", "--config", "cpu-demo", "--out", str(out), *options]) == 2
    assert reason in capsys.readouterr().err
    assert not out.exists()


def test_numbers_in_exponent_notation_are_numbers(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(fss.train, "train", lambda config, out, **options: seen.update(config=config) or {})
    assert main(["train", "--config", "cpu-demo", "--out", str(tmp_path / "run"), "--set", "learning_rate=1e-3", "--set", "weight_decay=2E-5"]) == 0
    assert seen["config"].learning_rate == 0.001 and seen["config"].weight_decay == 2e-5


def test_a_configuration_file_that_is_not_utf8_is_named(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# r\u00e9glages\niterations: 5\n".encode("latin-1"))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert f"{path}: not UTF-8 text (byte 3 is 0xe9)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="latin1.yaml: not UTF-8 text"):
        GeneratorConfig.load(path)


@pytest.mark.parametrize("text, reason", [("- a\n- list\n", "expected a mapping"), ("word", "expected a mapping"), ("a: [1, 2", "not valid YAML")])
def test_configuration_files_that_are_not_mappings_are_refused(tmp_path, capsys, text, reason):
    (tmp_path / "config.yaml").write_text(text)
    assert main(["train", "--config", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert reason in capsys.readouterr().err
    with pytest.raises(ValueError, match="mapping|not valid YAML"):
        GeneratorConfig.load(tmp_path / "config.yaml")


def test_seeds_refuse_what_the_layout_cannot_hold(tmp_path, capsys):
    volume = ball_volume()
    nib.save(nib.Nifti1Image(volume.image.astype(np.float32), volume.affine), tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image(volume.labels, volume.affine), tmp_path / "labels.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros_like(volume.labels), volume.affine), tmp_path / "empty.nii.gz")
    pair = ["seeds", "--image", str(tmp_path / "image.nii.gz"), "--out", str(tmp_path / "out")]
    assert main([*pair, "--labels", str(tmp_path / "labels.nii.gz"), "--subject", "01", "--max-subclasses", "12"]) == 1
    assert "max_subclasses must be between 1 and 9" in capsys.readouterr().out
    assert main([*pair, "--labels", str(tmp_path / "empty.nii.gz"), "--subject", "01"]) == 1
    assert "the label map is empty" in capsys.readouterr().out
    assert main([*pair, "--labels", str(tmp_path / "labels.nii.gz"), "--subject", "../../x"]) == 1
    assert "a BIDS subject label holds only letters and digits" in capsys.readouterr().out
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "x").exists()


def test_seeds_warn_when_another_label_convention_fits_the_image(tmp_path, capsys):
    volume = ball_volume()  # FeTA labels of a T2-weighted toy brain: CSF 250, white matter 160, cortex 110
    nib.save(nib.Nifti1Image(volume.image.astype(np.float32), volume.affine), tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image(volume.labels, volume.affine), tmp_path / "labels.nii.gz")
    seeds = ["seeds", "--image", str(tmp_path / "image.nii.gz"), "--labels", str(tmp_path / "labels.nii.gz"), "--subject", "01"]
    assert main([*seeds, "--out", str(tmp_path / "atlas"), "--convention", "atlas"]) == 0
    printed = capsys.readouterr().out
    assert f"01: warning: {tmp_path / 'labels.nii.gz'}: read in the 'atlas' label convention" in printed
    assert "in the 'feta' convention it is: is it in that one? (--convention feta)" in printed
    assert main([*seeds, "--out", str(tmp_path / "feta")]) == 0
    assert "warning" not in capsys.readouterr().out


def test_memory_is_estimated_before_work_starts(tmp_path, checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(fss.device, "memory_bytes", lambda device="auto": 2**30)  # a 1 GiB machine
    for name, shape in (("small", (30, 26, 14)), ("large", (400, 400, 400))):
        image = nib.Nifti1Image(np.zeros(shape, np.float32), np.diag([0.5, 0.5, 0.5, 1.0]))
        image.dataobj[5:-5, 5:-5, 5:-5] = 1.0
        nib.save(image, tmp_path / f"{name}.nii.gz")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "small.nii.gz"), str(tmp_path / "large.nii.gz"), "-o", str(out), "--checkpoint", str(checkpoint)]) == 1
    printed = capsys.readouterr().out
    assert "large.nii.gz: failed: segmenting a 400x400x400 scan" in printed and "more than the 1.0 GiB" in printed
    assert list(pd.read_csv(out / "volumes.tsv", sep="\t").image) == ["small.nii.gz"]  # the batch went on
    volume = ball_volume()
    with pytest.raises(ValueError, match="a 4000x4000x4000 synthetic sample needs about"):
        Generator(
            [SynthSubject("ball", volume.seeds, volume.labels)],
            dataclasses.replace(preset("reference"), output_shape=(4000, 4000, 4000)),
            device="cpu",
        )


def test_devices_are_checked():
    with pytest.raises(ValueError, match="unknown device 'foo'"):
        resolve_device("foo")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_evaluate_of_empty_label_maps_writes_nan(tmp_path, capsys):
    empty = nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4))
    nib.save(empty, tmp_path / "p.nii.gz")
    nib.save(empty, tmp_path / "r.nii.gz")
    assert main(["evaluate", str(tmp_path / "p.nii.gz"), str(tmp_path / "r.nii.gz"), "-o", str(tmp_path / "m.tsv")]) == 0
    assert pd.read_csv(tmp_path / "m.tsv", sep="\t").value.isna().all()


def test_a_checkpoint_with_other_architecture_keys_is_refused(tmp_path, checkpoint):
    model, metadata = load_checkpoint(checkpoint)
    genuine = dict(model.config)
    for change in ({"depth": 5}, {"channels": None}):  # written with valid checksums, as a forger would
        model.config = {k: v for k, v in {**genuine, **change}.items() if v is not None}
        save_checkpoint(model, tmp_path / "forged", metadata)
        with pytest.raises(CheckpointError, match="not a fss U-Net"):
            load_checkpoint(tmp_path / "forged")


def test_checkpoints_without_a_spacing_or_with_pickled_weights_are_refused_in_one_line(tmp_path, checkpoint, capsys):
    nib.save(scan(), tmp_path / "scan.nii.gz")
    model, metadata = load_checkpoint(checkpoint)
    save_checkpoint(model, tmp_path / "no-spacing", {k: v for k, v in metadata.items() if k != "spacing_mm"})
    segment_with = ["segment", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "out"), "--checkpoint"]
    assert main([*segment_with, str(tmp_path / "no-spacing")]) == 1
    assert "no-spacing: records no working-grid spacing (spacing_mm: None)" in capsys.readouterr().err
    save_checkpoint(model, tmp_path / "pickled", metadata)
    weights, document_path = tmp_path / "pickled.safetensors", tmp_path / "pickled.json"
    weights.write_bytes(b"\x80\x04\x95" + bytes(64))  # a pickle's opening bytes, renamed; its hash written into the JSON
    document = json.loads(document_path.read_text())
    document_path.write_text(json.dumps({**document, "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}, indent=1, sort_keys=True))
    assert main([*segment_with, str(tmp_path / "pickled")]) == 1
    assert "pickled.safetensors: not a safetensors file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_packaged_models_are_chosen_by_name(tmp_path, capsys):
    nib.save(scan(), tmp_path / "scan.nii.gz")
    segment_into = ["segment", str(tmp_path / "scan.nii.gz"), "-o"]
    assert main([*segment_into, str(tmp_path / "a_dseg.nii.gz"), "--checkpoint", "fss-real-cpu"]) == 2
    assert "fss-real-cpu is a packaged model: --model fss-real-cpu" in capsys.readouterr().err
    assert main([*segment_into, str(tmp_path / "a_dseg.nii.gz"), "--model", "fss-nothing"]) == 2
    assert "no packaged model 'fss-nothing'; available: fss-real-cpu, fss-synth-cpu" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*segment_into, str(tmp_path / "a_dseg.nii.gz"), "--model", "fss-real-cpu", "--checkpoint", "run/best"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert main([*segment_into, str(tmp_path / "real_dseg.nii.gz"), "--model", "fss-real-cpu"]) == 0
    assert main([*segment_into, str(tmp_path / "synth_dseg.nii.gz")]) == 0
    model = {name: json.loads((tmp_path / f"{name}_dseg.json").read_text())["model"] for name in ("real", "synth")}
    assert model == {"real": "fss-real-cpu", "synth": "fss-synth-cpu"}
    assert main(["info"]) == 0 and "models     fss-real-cpu, fss-synth-cpu (default) (fss segment --model NAME)" in capsys.readouterr().out


def test_a_missing_input_is_named_and_nothing_is_written(tmp_path, checkpoint, capsys):
    nib.save(scan(), tmp_path / "here.nii.gz")
    missing = str(tmp_path / "absent.nii.gz")
    assert main(["segment", missing, "-o", str(tmp_path / "out" / "absent_dseg.nii.gz"), "--checkpoint", str(checkpoint)]) == 1
    assert f"{missing}: no such file or folder; nothing was segmented" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "here.nii.gz"), missing, "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint)]) == 1
    assert f"{missing}: no such file or folder" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main(["evaluate", missing, str(tmp_path / "here.nii.gz"), "-o", str(tmp_path / "m.tsv")]) == 1
    assert f"{missing}: no such file or folder" in capsys.readouterr().err


def test_a_tiny_scan_is_segmented(tmp_path):
    data = np.zeros((6, 6, 6), np.float32)
    data[2:4, 2:4, 2:4] = 1.0
    labels, _ = segment(nib.Nifti1Image(data, np.diag([1.6, 1.6, 1.6, 1.0])), pretrained.load(), device="cpu")
    assert labels.shape == (6, 6, 6)


def test_a_truncated_file_is_named(tmp_path):
    nib.save(scan(), tmp_path / "whole.nii")
    whole = (tmp_path / "whole.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        ValueError, match=r"cut.nii: the voxel data cannot be read \(Expected \d+ bytes, got \d+ bytes .* could the file be damaged\?\)"
    ):
        load_nifti(tmp_path / "cut.nii")


def test_an_interrupt_saves_the_training_state_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    volume = ball_volume()
    calls = []

    def step_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C during the third iteration
        return 1.0

    monkeypatch.setattr(fss.train, "training_step", step_then_interrupt)
    config = tiny_config(iterations=10, validation_every=5, crop_shape=(16, 16, 16), channels=(4, 8))
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="after iteration 3"):
        train(config, tmp_path / "run", progress=False, training=[volume], validation=[volume])
    assert json.loads((tmp_path / "run" / "last_state.json").read_text())["iteration"] == 3
    assert signal.getsignal(signal.SIGINT) is handler
    monkeypatch.undo()
    resumed = train(config, tmp_path / "run", resume=True, progress=False, training=[volume], validation=[volume])
    assert resumed["iterations"] == 10


def test_a_second_interrupt_stops_at_once_but_lets_a_save_finish(tmp_path, monkeypatch):
    volume = ball_volume()
    config = tiny_config(iterations=10, validation_every=5, crop_shape=(16, 16, 16), channels=(4, 8))

    def twice(*args, **kwargs):  # two Ctrl-C 0.02 s apart during a training step
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        return 1.0

    with monkeypatch.context() as patch:
        patch.setattr(fss.train, "training_step", twice)
        with pytest.raises(KeyboardInterrupt):
            train(config, tmp_path / "stopped", progress=False, training=[volume], validation=[volume])
    checkpoint = fss.train._checkpoint

    def twice_while_saving(*args):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        return checkpoint(*args)

    monkeypatch.setattr(fss.train, "_checkpoint", twice_while_saving)
    with pytest.raises(TrainingInterrupted, match="after iteration 5"):
        train(config, tmp_path / "run", progress=False, training=[volume], validation=[volume])
    monkeypatch.undo()
    assert json.loads((tmp_path / "run" / "last_state.json").read_text())["iteration"] == 5
    assert read_metadata(tmp_path / "run" / "last")["iterations"] == 5
    assert pd.read_csv(tmp_path / "run" / "log.csv")["iteration"].iloc[-1] == 5
    resumed = train(config, tmp_path / "run", resume=True, progress=False, training=[volume], validation=[volume])
    assert resumed["iterations"] == 10


def test_train_records_the_command_line_that_started_it(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(fss.train, "train", lambda config, out, **options: seen.update(options) or {})
    assert main(["train", "--config", "cpu-demo", "--out", str(tmp_path / "my run"), "--until", "5"]) == 0
    assert seen["command"] == f"fss train --config cpu-demo --out '{tmp_path / 'my run'}' --until 5"


def test_a_diverged_training_exits_1_and_says_what_is_kept(tmp_path, monkeypatch, capsys):
    def diverge(config, out, **options):
        raise TrainingDiverged(out, 7, "the loss is nan", 5)

    monkeypatch.setattr(fss.train, "train", diverge)
    assert main(["train", "--config", "cpu-demo", "--out", str(tmp_path / "run"), "--set", "learning_rate=1.0e+12"]) == 1
    assert "the loss is nan at iteration 7: training diverged (is the learning rate too high?) and stopped; the checkpoints of iteration 5" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("folder", "a folder; name the table's file"),
        ("results.v2/", "a folder; name the table's file"),
        ("m.csv", "written as tab-separated values; give it a .tsv name, e.g. m.tsv"),
        ("/dev/null", "give it a .tsv name"),
    ],
)
def test_evaluate_refuses_an_output_that_is_not_a_tsv_file(tmp_path, capsys, output, reason):
    label_folders(tmp_path)
    (tmp_path / "folder").mkdir()
    target = output if output.startswith("/") else str(tmp_path / output) + ("/" if output.endswith("/") else "")
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", target, "--overwrite"]) == 2
    assert reason in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "results.v2").exists() and not any((tmp_path / "folder").iterdir())


def test_leftover_temporary_files_are_ignored_and_cleaned(tmp_path, capsys):
    label_folders(tmp_path)
    leftover = tmp_path / "pred" / ".sub-01_dseg.nii.gz.k2j4h1.nii.gz"
    leftover.write_bytes(b"half a file")  # what SIGKILL during a write leaves
    out = tmp_path / "metrics.tsv"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(out)]) == 0
    assert "no counterpart" not in capsys.readouterr().out
    stale = tmp_path / ".metrics.tsv.abc123.tsv"
    stale.write_text("half a table")
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(out), "--overwrite"]) == 0
    assert not stale.exists() and leftover.exists()  # cleaned where fss writes; an input folder is left alone


def test_an_unexpected_error_is_one_line_unless_debugging(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(fss.metrics, "score_label_maps", broken)
    labels = nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4))
    nib.save(labels, tmp_path / "p.nii.gz")
    arguments = ["evaluate", str(tmp_path / "p.nii.gz"), str(tmp_path / "p.nii.gz"), "-o", str(tmp_path / "m.tsv")]
    assert main(arguments) == 1
    err = capsys.readouterr().err
    assert err.strip() == "fss evaluate: unexpected error: RuntimeError: something nobody foresaw (re-run with --debug for the traceback)"
    with pytest.raises(RuntimeError):
        main(["--debug", *arguments])


def test_segment_writes_probabilities_and_takes_a_window(tmp_path, checkpoint, capsys):
    nib.save(scan(), tmp_path / "x.nii.gz")
    out = tmp_path / "x_dseg.nii.gz"
    assert (
        main(
            [
                "segment",
                str(tmp_path / "x.nii.gz"),
                "-o",
                str(out),
                "--checkpoint",
                str(checkpoint),
                "--probabilities",
                "--window",
                "8",
                "--overlap",
                "0.25",
            ]
        )
        == 0
    )
    probabilities = nib.load(tmp_path / "x_probseg.nii.gz")
    labels = np.asarray(nib.load(out).dataobj)
    assert probabilities.shape == (*labels.shape, 8) and probabilities.get_data_dtype() == np.uint8
    _, expected = segment(tmp_path / "x.nii.gz", load_checkpoint(checkpoint), device="cpu", window=8, overlap=0.25)
    np.testing.assert_allclose(probabilities.get_fdata(), expected.permute(1, 2, 3, 0).numpy(), atol=0.5 / 255 + 1e-6)  # uint8 steps of 1/255
    for option, value in (("--window", "7"), ("--overlap", "1.5")):
        assert main(["segment", str(tmp_path / "x.nii.gz"), "-o", str(tmp_path / "y.nii.gz"), "--checkpoint", str(checkpoint), option, value]) == 2
        assert option in capsys.readouterr().err


def _bytes(root):
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_no_command_writes_into_a_raw_dataset_or_another_pipelines_derivative(tmp_path, checkpoint, capsys):
    root = bids(tmp_path)
    nib.save(scan(), tmp_path / "x.nii.gz")
    experiment = Path(__file__).parents[1] / "experiments" / "subclasses.yaml"
    before = _bytes(root)
    for command in (
        ["segment", str(root), "-o", str(root / "sub-01"), "--checkpoint", str(checkpoint)],
        ["segment", str(root / "sub-01" / "anat" / "sub-01_T2w.nii.gz"), "-o", str(root / "sub-01" / "anat"), "--checkpoint", str(checkpoint)],
        ["segment", str(tmp_path / "x.nii.gz"), "-o", str(root / "x_dseg.nii.gz"), "--checkpoint", str(checkpoint)],
        ["synth", "--seeds", str(tmp_path / "seeds"), "--out", str(root), "--n", "1"],
        ["train", "--config", "cpu-demo", "--out", str(root / "run")],
        ["experiment", str(experiment), "--root", str(root / "experiments")],
        ["evaluate", str(tmp_path / "x.nii.gz"), str(tmp_path / "x.nii.gz"), "-o", str(root / "sub-01" / "metrics.tsv")],
        ["seeds", "--image", str(tmp_path / "x.nii.gz"), "--labels", str(tmp_path / "x.nii.gz"), "--subject", "x", "--out", str(root / "sub-01")],
    ):
        assert main(command) == 2, command
        assert f"inside the raw BIDS dataset {root}" in capsys.readouterr().err, command
    other = root / "derivatives" / "manual"
    other.mkdir(parents=True)
    (other / "dataset_description.json").write_text(
        '{"Name": "m", "BIDSVersion": "1.9.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": "itk-snap"}]}'
    )
    (other / "dseg.tsv").write_text("index\tname\n1\tcortex\n")
    before = _bytes(root)
    assert main(["segment", str(root), "-o", str(other), "--checkpoint", str(checkpoint), "--overwrite"]) == 2
    assert "a derivative dataset of itk-snap" in capsys.readouterr().err
    assert _bytes(root) == before
    assert main(["segment", str(root), "-o", str(root / "derivatives" / "fss"), "--checkpoint", str(checkpoint)]) == 1  # sub-03 is NaN
    assert (root / "derivatives" / "fss" / "sub-01" / "anat" / "sub-01_dseg.nii.gz").exists()
    assert {p: b for p, b in _bytes(root).items() if "derivatives" not in p.parts} == {
        p: b for p, b in before.items() if "derivatives" not in p.parts
    }


def test_a_derivative_folder_is_fss_s_only_when_fss_created_it(tmp_path, checkpoint, capsys):
    root = bids(tmp_path)
    manual = root / "derivatives" / "manual" / "sub-01" / "anat"
    manual.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4)), manual / "sub-01_dseg.nii.gz")  # no dataset description
    image = root / "sub-01" / "anat" / "sub-01_T2w.nii.gz"
    before = _bytes(root)
    for output, reason in (
        (root / "derivatives" / "manual", "a derivative folder that fss did not create"),
        (root / "derivatives" / "manual" / "fss", "a derivative folder that fss did not create"),
        (root / "derivatives", "holds the derivatives of every pipeline"),
    ):
        for command in (
            ["segment", str(root), "-o", str(output), "--checkpoint", str(checkpoint), "--overwrite"],
            ["segment", str(image), "-o", str(output), "--checkpoint", str(checkpoint)],
            ["evaluate", str(manual / "sub-01_dseg.nii.gz"), str(manual / "sub-01_dseg.nii.gz"), "-o", str(output / "metrics.tsv")],
        ):
            assert main(command) == 2, command
            assert reason in capsys.readouterr().err, command
    assert _bytes(root) == before
    mine = root / "derivatives" / "fss"
    for _ in range(2):  # a folder fss created is its own the next time, whatever it wrote there first
        assert main(["segment", str(image), "-o", str(mine), "--checkpoint", str(checkpoint)]) == 0
        assert (
            main(["evaluate", str(manual / "sub-01_dseg.nii.gz"), str(manual / "sub-01_dseg.nii.gz"), "-o", str(mine / "metrics.tsv"), "--overwrite"])
            == 0
        )
    assert json.loads((mine / "dataset_description.json").read_text())["GeneratedBy"][0]["Name"] == "fss"
    seeds = [
        "seeds",
        "--image",
        str(image),
        "--labels",
        str(manual / "sub-01_dseg.nii.gz"),
        "--subject",
        "01",
        "--out",
        str(root),
        "--max-subclasses",
        "1",
    ]
    for _ in range(2):
        main(seeds)  # the label map fits no tissue well; what matters is where fss may write
        assert "inside" not in capsys.readouterr().err
    assert json.loads((root / "derivatives" / "seeds" / "dataset_description.json").read_text())["DatasetType"] == "derivative"


def test_a_picture_that_replaced_fss_s_own_is_not_deleted_as_stale(tmp_path, checkpoint):
    nib.save(scan(), tmp_path / "x.nii.gz")
    out = tmp_path / "out"
    segment = ["segment", str(tmp_path / "x.nii.gz"), "-o", str(out), "--checkpoint", str(checkpoint)]
    assert main([*segment, "--qc"]) == 0 and (out / "x_dseg_qc.png").exists()
    assert main([*segment, "--overwrite", "--tta"]) == 0 and not (out / "x_dseg_qc.png").exists()  # fss's own picture: stale, removed
    assert main([*segment, "--qc", "--overwrite"]) == 0
    (out / "x_dseg_qc.png").write_bytes(b"the user's own picture")
    assert main([*segment, "--overwrite", "--tta"]) == 0
    assert (out / "x_dseg_qc.png").read_bytes() == b"the user's own picture"


def test_segment_never_replaces_or_adopts_a_file_it_did_not_write(tmp_path, checkpoint, capsys):
    nib.save(scan(), tmp_path / "x.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    manual = nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4))
    nib.save(manual, out / "x_dseg.nii.gz")
    (out / "y_dseg_qc.png").write_bytes(b"someone's picture")
    before = _bytes(out)
    for overwrite in ([], ["--overwrite"]):
        assert main(["segment", str(tmp_path / "x.nii.gz"), "-o", str(out), "--checkpoint", str(checkpoint), *overwrite]) == 1
        assert "was not written by fss" in capsys.readouterr().out
    nib.save(scan(seed=2), tmp_path / "y.nii.gz")
    assert (
        main(["segment", str(tmp_path / "y.nii.gz"), "-o", str(out / "y_dseg.nii.gz"), "--checkpoint", str(checkpoint), "--qc", "--overwrite"]) == 1
    )
    assert "y_dseg_qc.png was not written by fss" in capsys.readouterr().out
    (out / "z_dseg.json").write_text('{"SkullStripped": true}')  # another tool's sidecar where fss would write its own
    nib.save(scan(seed=3), tmp_path / "z.nii.gz")
    assert main(["segment", str(tmp_path / "z.nii.gz"), "-o", str(out), "--checkpoint", str(checkpoint)]) == 1
    assert "z_dseg.json is not a record of fss" in capsys.readouterr().out
    root = bids(tmp_path)
    (out / "dseg.tsv").write_text("index\tname\n")  # another tool's label table where fss would write its own
    before = _bytes(out)
    assert main(["segment", str(root), "-o", str(out), "--checkpoint", str(checkpoint)]) == 2
    assert "dseg.tsv was not written by fss" in capsys.readouterr().err
    assert _bytes(out) == before  # nothing written: not the label maps, not volumes.tsv with the manual volumes


def test_kept_means_the_same_input_model_and_options(tmp_path, checkpoint, capsys):
    for folder, seed in (("d1", 1), ("d2", 2)):
        (tmp_path / folder).mkdir()
        nib.save(scan(seed=seed), tmp_path / folder / "scan.nii.gz")
    out = tmp_path / "out"
    segment = ["--checkpoint", str(checkpoint)]
    assert main(["segment", str(tmp_path / "d1" / "scan.nii.gz"), "-o", str(out), *segment]) == 0
    first = (out / "scan_dseg.nii.gz").read_bytes()
    assert main(["segment", str(tmp_path / "d2" / "scan.nii.gz"), "-o", str(out), *segment]) == 1
    assert "was made from another input (--overwrite replaces it)" in capsys.readouterr().out
    assert (out / "scan_dseg.nii.gz").read_bytes() == first
    assert main(["segment", str(tmp_path / "d1" / "scan.nii.gz"), "-o", str(out), *segment, "--tta"]) == 1
    assert "was made from other options" in capsys.readouterr().out
    assert main(["segment", str(tmp_path / "d2" / "scan.nii.gz"), "-o", str(out), *segment, "--overwrite"]) == 0
    record = json.loads((out / "scan_dseg.json").read_text())
    assert record["input"] == str((tmp_path / "d2" / "scan.nii.gz").resolve()) and record["complete"] and record["GeneratedBy"][0]["Name"] == "fss"
    assert main(["segment", str(tmp_path / "d2" / "scan.nii.gz"), "-o", str(out), *segment]) == 0
    assert "0 of 1 images segmented, 1 kept from before" in capsys.readouterr().out
    absolute = (out / "scan_dseg.nii.gz").resolve()
    assert main(["segment", str(tmp_path / "d2" / "scan.nii.gz"), "-o", str(absolute), *segment, "--overwrite"]) == 0
    assert pd.read_csv(out / "volumes.tsv", sep="\t").segmentation.tolist() == [str(absolute)]  # one row, however the path is spelled
    changed = nib.load(out / "scan_dseg.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(changed.dataobj) * 0, changed.affine, changed.header), out / "scan_dseg.nii.gz")  # a hand correction
    assert main(["segment", str(tmp_path / "d2" / "scan.nii.gz"), "-o", str(out), *segment]) == 1
    assert "changed since fss wrote it" in capsys.readouterr().out


def test_an_output_is_finished_only_when_all_its_files_are(tmp_path, checkpoint, monkeypatch, capsys):
    nib.save(scan(), tmp_path / "x.nii.gz")
    out = tmp_path / "out"
    command = ["segment", str(tmp_path / "x.nii.gz"), "-o", str(out), "--checkpoint", str(checkpoint), "--qc", "--probabilities"]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(fss.viz, "save_figure", disk_full)
        assert main(command) == 1
    assert "No space left on device" in capsys.readouterr().out
    assert not json.loads((out / "x_dseg.json").read_text())["complete"] and not (out / "x_dseg_qc.png").exists()
    assert main(command) == 0
    assert "1 of 1 images segmented" in capsys.readouterr().out and (out / "x_dseg_qc.png").exists()
    (out / "x_probseg.nii.gz").unlink()  # a file of a finished output goes missing: made again
    assert main(command) == 0
    assert "1 of 1 images segmented" in capsys.readouterr().out and (out / "x_probseg.nii.gz").exists()
    assert main(command[:-2]) == 0  # the same output without asking for its extra files: kept as it is
    assert "1 kept from before" in capsys.readouterr().out and (out / "x_dseg_qc.png").exists()
    assert main([*command[:-2], "--tta", "--overwrite"]) == 0  # made again otherwise: fss's own extra files of the old output go
    assert sorted(p.name for p in out.iterdir()) == ["volumes.tsv", "x_dseg.json", "x_dseg.nii.gz"]


def test_seeds_refuse_label_maps_that_fss_segmented_wherever_they_are(tmp_path, checkpoint, capsys):
    volume = ball_volume()
    nib.save(nib.Nifti1Image(volume.image.astype(np.float32), volume.affine), tmp_path / "x.nii.gz")
    assert main(["segment", str(tmp_path / "x.nii.gz"), "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint)]) == 0
    copied = tmp_path / "manual" / "x_dseg.nii.gz"
    copied.parent.mkdir()
    copied.write_bytes((tmp_path / "out" / "x_dseg.nii.gz").read_bytes())  # no sidecar travels with it
    assert main(["seeds", "--image", str(tmp_path / "x.nii.gz"), "--labels", str(copied), "--subject", "x", "--out", str(tmp_path / "s")]) == 1
    assert "is a segmentation made by fss" in capsys.readouterr().out
    assert not (tmp_path / "s" / "derivatives" / "seeds").exists()


def test_a_record_naming_files_elsewhere_deletes_nothing_there(tmp_path, checkpoint, capsys):
    nib.save(scan(), tmp_path / "scan.nii.gz")
    out = tmp_path / "deep" / "out"
    victims = [tmp_path / "victim.txt", tmp_path / "deep" / "victim.txt"]
    for victim in victims:
        victim.parent.mkdir(parents=True, exist_ok=True)
        victim.write_text("the user's")
    command = ["segment", str(tmp_path / "scan.nii.gz"), "-o", str(out), "--checkpoint", str(checkpoint)]
    assert main([*command, "--qc"]) == 0
    record = json.loads((out / "scan_dseg.json").read_text())
    record["planned"] += ["../../victim.txt", str(victims[1]), "..", "."]
    (out / "scan_dseg.json").write_text(json.dumps(record))
    assert main([*command, "--overwrite"]) == 0
    assert all(victim.read_text() == "the user's" for victim in victims)
    with pytest.raises(ValueError, match="a file name without folders"):
        write_seeds(tmp_path / "scan.nii.gz", tmp_path / "scan.nii.gz", tmp_path / "bids", "01", "../../../../victim", overwrite=True)


def test_train_refuses_resume_and_overwrite_together(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["train", "--out", str(tmp_path / "run"), "--resume", "--overwrite"])
    assert exit_status.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_output_another_process_is_segmenting_is_left_to_it(tmp_path, checkpoint, capsys):
    nib.save(scan(seed=1), tmp_path / "scan.nii.gz")
    nib.save(scan(seed=2), tmp_path / "other.nii.gz")
    out = tmp_path / "out"
    command = ["segment", str(tmp_path / "scan.nii.gz"), str(tmp_path / "other.nii.gz"), "-o", str(out), "--checkpoint", str(checkpoint), "--qc"]
    with claimed(out / "scan_dseg.nii.gz"):  # as another fss segment writing that label map holds it
        assert main(command) == 1
    assert f"scan.nii.gz: failed: another process is segmenting into {out / 'scan_dseg.nii.gz'}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["other_dseg.json", "other_dseg.nii.gz", "other_dseg_qc.png", "volumes.tsv"]
    assert pd.read_csv(out / "volumes.tsv", sep="\t").image.tolist() == ["other.nii.gz"]
    assert main(command) == 0 and "1 of 2 images segmented, 1 kept from before" in capsys.readouterr().out
    assert not list(out.glob(".*"))  # no claim left behind


SEGMENT_TEN_TIMES = """
import sys
from fss.cli import main
source, out, checkpoint = sys.argv[1:]
for _ in range(10):
    main(["segment", source, "-o", out, "--checkpoint", checkpoint, "--overwrite"])
"""


@pytest.mark.slow
def test_two_processes_segmenting_into_one_output_never_mix_their_files(tmp_path, checkpoint):
    volumes = {}
    for folder, seed in (("d1", 1), ("d2", 2)):
        (tmp_path / folder).mkdir()
        nib.save(scan(seed=seed), tmp_path / folder / "scan.nii.gz")
        assert (
            main(["segment", str(tmp_path / folder / "scan.nii.gz"), "-o", str(tmp_path / f"alone-{folder}"), "--checkpoint", str(checkpoint)]) == 0
        )
        volumes[str((tmp_path / folder / "scan.nii.gz").resolve())] = pd.read_csv(tmp_path / f"alone-{folder}" / "volumes.tsv", sep="\t")
    segmentations = {s: (tmp_path / f"alone-{f}" / "scan_dseg.nii.gz").read_bytes() for s, f in zip(volumes, ("d1", "d2"))}
    assert len(set(segmentations.values())) == 2  # the two inputs give two label maps, so that a mixture shows
    out = tmp_path / "out"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", SEGMENT_TEN_TIMES, source, str(out), str(checkpoint)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for source in volumes
    ]
    for child in children:
        assert child.wait(timeout=600) in (0, 1), child.stderr.read()[-2000:]
    source = json.loads((out / "scan_dseg.json").read_text())["input"]
    assert (out / "scan_dseg.nii.gz").read_bytes() == segmentations[source]
    table = pd.read_csv(out / "volumes.tsv", sep="\t")
    pd.testing.assert_frame_equal(table.drop(columns="segmentation"), volumes[source].drop(columns="segmentation"))


def test_a_subject_whose_seeds_another_process_writes_is_left_to_it(tmp_path, capsys):
    volume = ball_volume()
    nib.save(nib.Nifti1Image(volume.image.astype(np.float32), volume.affine), tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image(volume.labels, volume.affine), tmp_path / "labels.nii.gz")
    seeds = ["seeds", "--image", str(tmp_path / "image.nii.gz"), "--labels", str(tmp_path / "labels.nii.gz"), "--subject", "ball"]
    seeds += ["--out", str(tmp_path / "root"), "--max-subclasses", "2"]
    assert main(seeds) == 0
    before = _bytes(tmp_path / "root")
    label_map = next((tmp_path / "root").rglob("labels.nii.gz"))
    with claimed(label_map):  # as another fss seeds writing this subject holds it
        assert main([*seeds, "--overwrite", "--seed", "1"]) == 1
        assert "another process is writing the seeds of ball" in capsys.readouterr().out
    assert _bytes(tmp_path / "root") == before
    assert main([*seeds, "--overwrite", "--seed", "1"]) == 0  # once it is free


SYNTH_TEN_TIMES = """
import sys
from fss.cli import main
seeds, out, seed = sys.argv[1:]
for _ in range(10):
    main(["synth", "--seeds", seeds, "--out", out, "--n", "2", "--seed", seed, "--device", "cpu", "--output-shape", "16", "16", "16", "--overwrite"])
"""


@pytest.mark.slow
def test_two_processes_writing_samples_into_one_folder_never_mix_their_sets(tmp_path):
    volume = ball_volume()
    image, labels = nib.Nifti1Image(volume.image.astype(np.float32), volume.affine), nib.Nifti1Image(volume.labels, volume.affine)
    write_seeds(image, labels, tmp_path / "seeds", "sub-ball", "sub-ball_dseg", "feta", 4, 0)
    alone = {}
    for seed in ("0", "1"):
        command = ["synth", "--seeds", str(tmp_path / "seeds"), "--out", str(tmp_path / f"alone-{seed}"), "--n", "2", "--seed", seed]
        assert main([*command, "--device", "cpu", "--output-shape", "16", "16", "16"]) == 0
        alone[seed] = {p.relative_to(tmp_path / f"alone-{seed}"): p.read_bytes() for p in (tmp_path / f"alone-{seed}").rglob("*") if p.is_file()}
    out = tmp_path / "out"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", SYNTH_TEN_TIMES, str(tmp_path / "seeds"), str(out), seed], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for seed in ("0", "1")
    ]
    for child in children:
        assert child.wait(timeout=600) == 0, child.stderr.read()[-2000:]
    found = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert found in (alone["0"], alone["1"])
