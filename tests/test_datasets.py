import shutil

import nibabel as nib
import numpy as np
import pytest

from fss import datasets
from fss.labels import to_feta


def test_registry_matches_the_mirror_checksums(mirror):
    sums = {}
    for line in (mirror / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split()
        sums[path.removeprefix("./")] = digest
    registry = datasets.registry()
    assert {key: registry[key].sha256 for key in sums} == sums
    extra = set(registry) - set(sums)
    assert all(key.endswith("LICENSE") for key in extra), extra


def test_urls_are_pinned_to_commits():
    for entry in datasets.registry().values():
        repository, path = entry.key.split("/", 1)
        assert entry.url.startswith("https://raw.githubusercontent.com/")
        assert f"/{repository}/" in entry.url and entry.url.endswith(path)
        commit = entry.url.split(f"/{repository}/")[1].split("/")[0]
        assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit), entry.url


def test_every_mirrored_file_verifies_offline(mirror):
    paths = datasets.fetch_all(mirror)
    assert len(paths) == len(datasets.registry())
    assert all(path.is_file() for path in paths.values())


def test_data_folder_order(monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    assert datasets.data_home(tmp_path / "arg") == tmp_path / "arg"
    assert datasets.data_home() == tmp_path / "env"
    monkeypatch.delenv(datasets.ENV_VAR)
    assert "fss" in str(datasets.data_home())


def test_crl_record_describes_and_credits_the_data(mirror):
    [record] = datasets.fetch_crl_atlas(ages=[30])
    assert (record.name, record.family, record.gestational_age, record.convention) == ("crl-GA30", "crl", 30, "atlas")
    assert record.skull_stripped and "non-commercial" in record.licence and "Gholipour" in record.citation
    labels = nib.load(record.labels)
    assert labels.shape == (135, 189, 155) and np.allclose(labels.header.get_zooms(), 0.8)
    feta = to_feta(np.asarray(labels.dataobj), record.convention)
    assert set(np.unique(feta)) == set(range(8))
    assert nib.load(record.image).shape == labels.shape


def test_wu_and_reference_records(mirror):
    wu = datasets.fetch_wu_atlas()
    assert [r.gestational_age for r in wu] == list(range(22, 35))
    assert not any(r.skull_stripped for r in wu)
    reference = datasets.fetch_reference_example()
    assert reference.image is None and reference.convention == "feta"
    assert sorted(reference.seeds) == [1, 2, 3, 4] and all(sorted(s) == [1, 2, 3, 4] for s in reference.seeds.values())
    seed = np.asarray(nib.load(reference.seeds[3][2]).dataobj)
    assert set(np.unique(seed)) <= {0, 20, 21, 22}


def test_unknown_age_is_refused():
    with pytest.raises(ValueError, match=r"no gestational age \[20\]; available: 21-38"):
        datasets.fetch_crl_atlas(ages=[20, 30])


def _copy_crl30(mirror, destination):
    for key in datasets.FAMILIES["crl"].keys(30).values():
        (destination / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mirror / key, destination / key)
    return destination


def test_corrupted_copy_is_refused_and_left_alone(mirror, tmp_path):
    _copy_crl30(mirror, tmp_path)
    labels = tmp_path / datasets.FAMILIES["crl"].keys(30)["labels"]
    corrupted = bytearray(labels.read_bytes())
    corrupted[100] ^= 0xFF
    labels.write_bytes(bytes(corrupted))
    with pytest.raises(datasets.ChecksumError, match="is not used") as error:
        datasets.fetch_crl_atlas(ages=[30], data_dir=tmp_path)
    assert str(labels) in str(error.value)
    assert labels.read_bytes() == bytes(corrupted), "a corrupted file must not be replaced behind the user's back"


def test_complete_mirror_is_only_read(mirror, tmp_path):
    _copy_crl30(mirror, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    datasets.fetch_crl_atlas(ages=[30], data_dir=tmp_path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_missing_file_without_network_names_url_and_variable(tmp_path):
    with pytest.raises(datasets.DataUnavailableError) as error:
        datasets.fetch_crl_atlas(ages=[25], data_dir=tmp_path)
    message = str(error.value)
    assert "https://raw.githubusercontent.com/LucasFidon/trustworthy-ai-fetal-brain-segmentation/" in message
    assert datasets.ENV_VAR in message and str(tmp_path) in message
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "no partial download may be left"


def test_unknown_key():
    with pytest.raises(KeyError, match="not a known data file"):
        datasets.fetch_file("nowhere/file.nii.gz")
