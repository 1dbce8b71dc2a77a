"""The experiment runner on stub notebooks (a "training" that writes a number, an "evaluation" that tabulates it)."""

import ast
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest
import yaml

import fss.experiments
from fss.cli import main
from fss.evaluation import with_stress_columns
from fss.experiments import dice_per_seed, execute, gather, load_experiment, plan, run_experiment, spread_over_seeds, status
from fss.paths import locked

TRAIN = """
import json
from pathlib import Path
Path(output_dir).mkdir(parents=True, exist_ok=True)
(Path(output_dir) / "summary.json").write_text(json.dumps({"score": 0.5 + 0.1 * seed + gain}))
"""

EVALUATE = """
import json
from pathlib import Path
import pandas as pd
if fail:
    raise RuntimeError("this arm fails on purpose")
score = json.loads((Path(trained_dir) / "summary.json").read_text())["score"]
Path(output_dir).mkdir(parents=True, exist_ok=True)
rows = [{"model": "notebook 03", "dataset": dataset, "case": case, "tissue": "WM", "metric": "dice", "value": score}
        for dataset, case in (("CRL (held out)", "crl-GA31"), ("stress: noise", "crl-GA31 severity 3"))]
pd.DataFrame(rows).to_csv(Path(output_dir) / "metrics.tsv", sep="\\t", index=False)
"""


def notebook(path, code, parameters):
    cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(code)]
    book = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(book, path)


@pytest.fixture
def experiment_file(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    notebook(folder / "train.ipynb", TRAIN, 'seed = 0\ngain = 0.0\noutput_dir = "out"')
    notebook(folder / "evaluate.ipynb", EVALUATE, 'seed = 0\nfail = False\ntrained_dir = None\noutput_dir = "out"')
    values = {
        "description": "a stub",
        "notebooks": "notebooks",
        "chain": ["train", "evaluate"],
        "parameters": {"fail": False},
        "settings": {"tiny": {"gain": 0.0}, "other": {"gain": 0.2}},
        "arms": {"plain": {}, "broken": {"fail": True}},
        "repeats": 2,
    }
    path = tmp_path / "stub.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def test_runs_are_arms_times_seeds_with_ids_that_follow_the_parameters(experiment_file):
    experiment = load_experiment(experiment_file)
    runs = plan(experiment, "tiny")
    assert [(r.arm, r.seed) for r in runs] == [("plain", 0), ("plain", 1), ("broken", 0), ("broken", 1)]
    assert len({r.id for r in runs}) == 4 and runs[0].id == plan(experiment, "tiny")[0].id
    assert runs[0].id != plan(experiment, "other")[0].id  # another setting, other parameters: another folder
    with pytest.raises(ValueError, match="no setting 'huge'"):
        plan(experiment, "huge")


def test_a_grid_runs_skips_what_is_done_records_failures_and_gathers(experiment_file, tmp_path, capsys):
    root = tmp_path / "results"
    assert main(["experiment", str(experiment_file), "--setting", "tiny", "--root", str(root)]) == 1  # the broken arm fails
    experiment = load_experiment(experiment_file)
    runs = plan(experiment, "tiny")
    assert [status(r, root) for r in runs] == ["done", "done", "failed", "failed"]
    assert "this arm fails on purpose" in (runs[2].folder(root) / "error.txt").read_text()
    table = pd.read_csv(root / "stub" / "tiny" / "results.tsv", sep="\t")
    assert sorted(table.value.unique()) == pytest.approx([0.5, 0.6])  # seed 0 and seed 1
    stressed = table[table.dataset == "stress: noise"]
    assert set(stressed.stress) == {"noise"} and set(stressed.severity) == {3}
    assert set(table.columns) >= {"run", "arm", "seed", "fail"}  # the parameter that differs between arms is a column
    assert (root / "stub" / "tiny" / "results.png").stat().st_size > 0
    per_seed = pd.read_csv(root / "stub" / "tiny" / "dice.tsv", sep="\t")
    assert spread_over_seeds(per_seed).loc[("CRL (held out)", "plain")].tolist() == pytest.approx([0.55, 0.5, 0.6, 2])
    out = capsys.readouterr().out
    assert "mean Dice of the tissues over the seeds" in out and "failed: broken-seed0" in out
    assert re.search(rf"^{runs[0].id}: done in \d+\.\d minutes$", out, re.MULTILINE)  # what a run costs, printed
    stamp = (runs[0].folder(root) / "metrics.tsv").stat().st_mtime_ns
    run_experiment(experiment_file, "tiny", root, only="plain", progress=False)
    assert f"{runs[0].id}: done\n" in capsys.readouterr().out  # nothing ran, no minutes
    assert (runs[0].folder(root) / "metrics.tsv").stat().st_mtime_ns == stamp  # done runs are not redone


def test_a_run_made_by_other_notebook_code_is_stale_left_out_and_run_again(experiment_file, tmp_path, monkeypatch):
    root = tmp_path / "results"
    run_experiment(experiment_file, "tiny", root, only="plain", progress=False)
    done = plan(load_experiment(experiment_file), "tiny")[0]
    assert status(done, root) == "done" and yaml.safe_load((done.folder(root) / "params.yaml").read_text())["provenance"]["fss"]
    with monkeypatch.context() as patch:  # the package's own sources changed (a preset's range, a stage), the version not
        patch.setattr(fss.experiments, "source_sha256", lambda: "0123456789abcdef")
        assert status(plan(load_experiment(experiment_file), "tiny")[0], root) == "stale"
    notebook(tmp_path / "notebooks" / "train.ipynb", TRAIN.replace("0.5 +", "0.7 +"), 'seed = 0\ngain = 0.0\noutput_dir = "out"')
    changed = load_experiment(experiment_file)
    again = plan(changed, "tiny")[0]
    assert again.id == done.id and status(again, root) == "stale"  # same parameters, other code
    assert gather(changed, "tiny", root).empty
    table = run_experiment(changed, "tiny", root, only="plain", progress=False)
    assert sorted(table.value.unique()) == pytest.approx([0.7, 0.8])


def test_without_papermill_the_runner_says_how_to_install_it(experiment_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "papermill", None)  # as if it were not installed
    with pytest.raises(ValueError, match=r"pip install 'fss\[notebooks\]'"):
        load_experiment(experiment_file)


def test_a_run_that_another_process_is_running_is_left_alone(experiment_file, tmp_path):
    root = tmp_path / "results"
    running = plan(load_experiment(experiment_file), "tiny")[0]
    running.folder(root).mkdir(parents=True)
    (running.folder(root) / "03_training.ipynb").write_text("half executed")
    with locked(running.folder(root).parent / f".{running.id}.lock"):  # as another runner holds it
        assert execute(running, root) == "running"
        assert (running.folder(root) / "03_training.ipynb").read_text() == "half executed"
    assert execute(running, root) == "done"


def test_an_experiment_changed_in_code_runs_as_changed(experiment_file, tmp_path):
    root = tmp_path / "results"
    fewer = dataclasses.replace(load_experiment(experiment_file), repeats=1)  # the file says 2
    table = run_experiment(fewer, "tiny", root, only="plain", progress=False)
    assert list(table.seed.unique()) == [0]
    assert (fewer.folder("tiny", root) / "results.tsv").exists() and fewer.folder("tiny", root) == root / "stub" / "tiny"


def test_an_interrupted_grid_restarts_cleanly(experiment_file, tmp_path, monkeypatch):
    root = tmp_path / "results"
    real = papermill.execute_notebook
    calls = []

    def interrupted_on_the_third_notebook(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(papermill, "execute_notebook", interrupted_on_the_third_notebook)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(experiment_file, "tiny", root, only="plain", progress=False)
    runs = plan(load_experiment(experiment_file), "tiny")
    assert [status(r, root) for r in runs[:2]] == ["done", "interrupted"]
    with locked(runs[1].folder(root).parent / f".{runs[1].id}.lock"):  # as while another process runs it
        assert status(runs[1], root) == "running"
    (runs[1].folder(root) / "half-written.tmp").write_text("left by the interrupted run")
    stamp = (runs[0].folder(root) / "metrics.tsv").stat().st_mtime_ns
    monkeypatch.setattr(papermill, "execute_notebook", real)
    table = run_experiment(experiment_file, "tiny", root, only="plain", progress=False)
    assert [status(r, root) for r in runs[:2]] == ["done", "done"] and table.run.nunique() == 2
    assert (runs[0].folder(root) / "metrics.tsv").stat().st_mtime_ns == stamp
    assert not (runs[1].folder(root) / "half-written.tmp").exists()


def test_dry_run_lists_and_bad_files_are_usage_errors(experiment_file, tmp_path, capsys):
    assert main(["experiment", str(experiment_file), "--dry-run", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("pending") == 4 and "stub (tiny): a stub" in out
    (tmp_path / "bad.yaml").write_text("chain: [missing]\nsettings: {a: {}}\narms: {b: {}}\n")
    assert main(["experiment", str(tmp_path / "bad.yaml"), "--dry-run"]) == 2
    assert "no notebook" in capsys.readouterr().err
    assert gather(load_experiment(experiment_file), "tiny", tmp_path / "nothing").empty


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"chain": "train"}, "chain must be a list of notebook names"),
        ({"settings": {"s1": 5}}, "settings 's1' must be a mapping of parameters, got 5"),
        ({"arms": {"a b": {}, "a_b": {}}}, "arms 'a b' and 'a_b' would share the folder name 'a_b'"),
        ({"arms": {"plain": {"seed": 42}}}, "arm plain sets ['seed'], which the runner gives each run"),
        ({"parameters": {"output_dir": "mine"}}, "parameters sets ['output_dir'], which the runner gives each run"),
    ],
)
def test_experiment_files_that_the_runner_would_misread_are_refused(experiment_file, tmp_path, capsys, change, reason):
    values = {**yaml.safe_load(experiment_file.read_text()), **change}
    path = experiment_file.with_name("changed.yaml")
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    with pytest.raises(ValueError) as error:
        load_experiment(path)
    assert reason in str(error.value)
    assert main(["experiment", str(path), "--dry-run", "--root", str(tmp_path / "results")]) == 2
    assert reason in capsys.readouterr().err


def test_a_results_table_that_cannot_be_read_is_named(experiment_file, tmp_path, capsys):
    root = tmp_path / "results"
    run_experiment(experiment_file, "tiny", root, only="plain", progress=False)
    table = plan(load_experiment(experiment_file), "tiny")[0].folder(root) / "metrics.tsv"
    command = ["experiment", str(experiment_file), "--setting", "tiny", "--root", str(root), "--only", "plain"]
    written = table.read_text()
    broken = {written.replace("\t0.5\n", "\tabout half\n", 1): "has the value 'about half', not a number", "": "not a table of results"}
    for text, reason in broken.items():
        table.write_text(text)
        assert main(command) == 1
        assert f"{table}: " in capsys.readouterr().err
        with pytest.raises(ValueError, match=reason):
            gather(load_experiment(experiment_file), "tiny", root)
    assert main([*command[:-1], "nothing"]) == 2 and "no run is called 'nothing'" in capsys.readouterr().err


def test_ctrl_c_during_an_experiment_is_one_line_and_exit_130(experiment_file, tmp_path):
    folder = experiment_file.parent / "notebooks"
    started = tmp_path / "started"  # the notebook's cell is running: its kernel is up and handles Ctrl-C
    source = f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\nfor _ in range(600):\n    time.sleep(0.1)"
    notebook(folder / "slow.ipynb", source, 'seed = 0\noutput_dir = "out"')
    path = experiment_file.with_name("slow.yaml")
    path.write_text(yaml.safe_dump({"notebooks": "notebooks", "chain": ["slow"], "settings": {"tiny": {}}, "arms": {"one": {}}}))
    root = tmp_path / "results"
    process = subprocess.Popen(
        [sys.executable, "-m", "fss.cli", "experiment", str(path), "--root", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, which Ctrl-C in a terminal signals: the runner and its kernel
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal, also when the tests run in the background
    )
    run = plan(load_experiment(path), "tiny")[0]
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    lines = [line for line in err.splitlines() if line.strip() and "it/s]" not in line and "run/s]" not in line]
    assert lines[-1] == "fss experiment: interrupted" and "Traceback" not in err, err
    assert status(run, root) == "interrupted"


def test_dice_per_seed_averages_cases_then_tissues_and_the_spread_spans_the_seeds():
    rows = [
        {
            "arm": arm,
            "seed": seed,
            "dataset": dataset,
            "case": f"{case}{suffix}",
            "tissue": tissue,
            "metric": metric,
            "value": value + 0.1 * seed + (0.2 if arm == "B" else 0) + (0.04 if case == "b" else 0) + (0.3 if tissue == "GM" else 0),
        }
        for arm in ("A", "B")
        for seed in (0, 1)
        for case in ("a", "b")
        for tissue in ("WM", "GM")
        for dataset, suffix, value in (("CRL (held out)", "", 0.1), ("stress: noise", " severity 2", 0.0), ("stress: noise", " severity 3", 0.05))
        for metric in ("dice", "hd95")
    ]
    per_seed = dice_per_seed(with_stress_columns(pd.DataFrame(rows)))
    assert list(dict.fromkeys(per_seed["where"])) == ["CRL (held out)", "noise 2", "noise 3"]
    one = per_seed.set_index(["where", "arm", "seed", "tissue"]).value
    assert one["CRL (held out)", "A", 0, "WM"] == pytest.approx(0.12)  # cases a and b: 0.1 and 0.14
    assert one["noise 3", "B", 1, "GM"] == pytest.approx(0.05 + 0.1 + 0.2 + 0.02 + 0.3)
    assert one["noise 2", "A", 1, "mean"] == pytest.approx((0.12 + 0.42) / 2)  # hd95 rows are not Dice
    summary = spread_over_seeds(per_seed)
    assert summary.loc[("CRL (held out)", "B")].tolist() == pytest.approx([0.52, 0.47, 0.57, 2])  # seeds: 0.47 and 0.57


@pytest.mark.parametrize("notebook", sorted(p.name for p in (Path(__file__).parents[1] / "notebooks").glob("0*.ipynb")))
def test_every_parameter_that_a_run_can_set_says_what_it_is(notebook):
    """The parameters cells are the API that ``fss experiment`` and papermill call: each parameter is commented."""
    cells = nbformat.read(Path(__file__).parents[1] / "notebooks" / notebook, as_version=4).cells
    [cell] = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    lines = cell.source.splitlines()
    assigned = [node for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)]
    assert assigned
    undocumented = [node.targets[0].id for node in assigned if "#" not in lines[node.lineno - 1]]
    assert not undocumented, f"{notebook}: no comment says what {undocumented} are"
