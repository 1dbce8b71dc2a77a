import pytest

from fss import datasets
from fss.cli import main


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
    with pytest.raises(SystemExit):
        main(["fetch"])


def test_info(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "device" in out
    assert f"{tmp_path} ($FSS_DATA; 0 of {len(datasets.registry())} registered files present)" in out
