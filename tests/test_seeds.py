import nibabel as nib
import numpy as np
import pytest

from fss.cli import main
from fss.seeds import Seeds, compare_seeds, compose_seed_map, labels_path, load_seeds, make_seeds, seed_path

AFFINE = np.diag([0.8, 0.8, 0.8, 1.0])


def two_population_subject(seed=0, skull=False):
    """A 'white matter' cube whose voxels come from two intensity populations, CSF around it."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((32, 32, 32), np.int16)
    labels[4:28, 4:28, 4:28] = 1
    labels[8:24, 8:24, 8:24] = 3
    labels[12:20, 12:20, 14:18] = 2
    bright = rng.random(labels.shape) < 0.4
    image = np.select(
        [labels == 1, labels == 2, (labels == 3) & bright, labels == 3],
        [rng.normal(300, 10, labels.shape), rng.normal(60, 5, labels.shape), rng.normal(160, 8, labels.shape), rng.normal(100, 8, labels.shape)],
        0,
    )
    if skull:
        image[0:2] = rng.normal(50, 20, (2, 32, 32)).clip(1)
    return nib.Nifti1Image(image.astype(np.float32), AFFINE), nib.Nifti1Image(labels, AFFINE), bright


def test_two_populations_are_recovered():
    image, labels, bright = two_population_subject()
    seeds = make_seeds(image, labels, max_subclasses=2, seed=0)
    wm = np.asarray(labels.dataobj) == 3
    layer = seeds.layers[2][3][wm]
    assert set(np.unique(layer)) == {30, 31}
    agreement = np.mean((layer == 31) == bright[wm])
    assert agreement >= 0.95, f"K=2 recovered only {agreement:.1%} of the split"
    mixture = seeds.mixtures[2][3]
    np.testing.assert_allclose(mixture.means, [100, 160], atol=3)
    np.testing.assert_allclose(mixture.weights, [0.6, 0.4], atol=0.03)


def test_layout_of_values_and_subclass_order():
    image, labels, _ = two_population_subject()
    seeds = make_seeds(image, labels, max_subclasses=4, seed=0)
    assert seeds.subclass_counts == [1, 2, 3, 4] and seeds.meta_labels == [1, 2, 3]
    feta = np.asarray(labels.dataobj)
    intensities = np.asarray(image.dataobj)
    for k, layers in seeds.layers.items():
        for m, layer in layers.items():
            assert layer.dtype == np.uint8
            inside = layer > 0
            assert set(np.unique(layer[inside])) <= {10 * m + j for j in range(k)}
            means = [intensities[layer == 10 * m + j].mean() for j in range(k) if np.any(layer == 10 * m + j)]
            assert means == sorted(means), "subclasses must be numbered by increasing intensity"
        brain = sum(layers.values()) > 0
        np.testing.assert_array_equal(brain, feta > 0)


def test_non_brain_meta_label_only_where_the_image_shows_it():
    image, labels, _ = two_population_subject(skull=True)
    seeds = make_seeds(image, labels, max_subclasses=2)
    assert seeds.meta_labels == [1, 2, 3, 4]
    assert np.all(seeds.layers[1][4][0:2] == 40)


def test_same_seed_same_seeds_and_another_seed_finds_the_same_populations():
    image, labels, bright = two_population_subject()
    first, second, other = (make_seeds(image, labels, 3, seed=s) for s in (7, 7, 8))
    for k in first.layers:
        for m in first.layers[k]:
            np.testing.assert_array_equal(first.layers[k][m], second.layers[k][m])
    assert any(not np.allclose(first.mixtures[3][m].means, other.mixtures[3][m].means) for m in first.layers[3])  # another fit
    wm = np.asarray(labels.dataobj) == 3  # and still the white matter's two populations, whatever the seed
    for seeds in (first, other):
        assert np.mean((seeds.layers[2][3][wm] == 31) == bright[wm]) >= 0.95


def test_small_region_falls_back_with_a_warning():
    image, labels, _ = two_population_subject()
    data = np.asarray(labels.dataobj).copy()
    data[data == 2] = 3
    data[16, 16, 16] = 2  # one grey-matter voxel
    with pytest.warns(UserWarning, match=r"grey matter \(meta-label 2\), K=2: 1 voxels allow only 1 of 2 subclasses"):
        seeds = make_seeds(image, nib.Nifti1Image(data, AFFINE), max_subclasses=2)
    assert seeds.layers[2][2][16, 16, 16] == 20


def test_different_grids_are_refused():
    image, labels, _ = two_population_subject()
    shifted = nib.Nifti1Image(np.asarray(labels.dataobj), AFFINE + _shift(2.0))
    with pytest.raises(ValueError, match="different grids .*different affines"):
        make_seeds(image, shifted)
    with pytest.raises(ValueError, match=r"shapes \(32, 32, 32\) and \(32, 32, 30\)"):
        make_seeds(image, nib.Nifti1Image(np.asarray(labels.dataobj)[..., :30], AFFINE))


def test_arrays_are_refused_naming_the_argument_and_paths_and_images_give_the_same_seeds(tmp_path):
    image, labels, _ = two_population_subject()
    with pytest.raises(TypeError, match="^image: expected the path of a NIfTI file or a nibabel image, got ndarray: wrap an array"):
        make_seeds(np.asarray(image.dataobj), labels)
    with pytest.raises(TypeError, match="^labels: .* got float"):
        make_seeds(image, float("nan"))
    with_nan = np.asarray(image.dataobj).copy()
    with_nan[3, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make_seeds(nib.Nifti1Image(with_nan, AFFINE), labels)
    nib.save(image, tmp_path / "image.nii.gz")
    nib.save(labels, tmp_path / "labels.nii.gz")
    from_files = make_seeds(tmp_path / "image.nii.gz", tmp_path / "labels.nii.gz", max_subclasses=2)
    in_memory = make_seeds(image, labels, max_subclasses=2)
    assert all(np.array_equal(from_files.layers[2][m], in_memory.layers[2][m]) for m in in_memory.layers[2])


def _shift(mm):
    shift = np.zeros((4, 4))
    shift[0, 3] = mm
    return shift


def test_reference_seeds_load_unchanged_and_compose(mirror):
    root = mirror / "FetalSynthSeg" / "data"
    seeds = load_seeds(root, "sta30")
    assert seeds.subclass_counts == [1, 2, 3, 4] and seeds.meta_labels == [1, 2, 3, 4]
    stem = "sub-sta30_rec-irtk_T2w_dseg"
    on_disk = np.asarray(nib.load(seed_path(root, "sta30", stem, 3, 2)).dataobj)
    np.testing.assert_array_equal(seeds.layers[3][2], on_disk)
    np.testing.assert_allclose(seeds.affine, nib.load(seed_path(root, "sta30", stem, 1, 1)).affine)

    composed = compose_seed_map(seeds, {1: 4, 2: 3, 3: 2, 4: 1})
    assert set(np.unique(composed)) == {0, 10, 11, 12, 13, 20, 21, 22, 30, 31, 40}
    assert np.count_nonzero(composed) == sum(np.count_nonzero(seeds.layers[k][m]) for m, k in {1: 4, 2: 3, 3: 2, 4: 1}.items())
    labels = np.asarray(nib.load(root / "sub-sta30" / "anat" / f"{stem}.nii.gz").dataobj)
    np.testing.assert_array_equal((composed // 10 == 3), np.isin(labels, [3, 5, 7]))
    with pytest.raises(ValueError, match=r"choose K for meta-labels \[4\]"):
        compose_seed_map(seeds, {1: 1, 2: 1, 3: 1})


def _bids(tmp_path):
    image, labels, _ = two_population_subject()
    atlas = np.asarray(labels.dataobj).copy()
    atlas = np.select([atlas == 1, atlas == 2, atlas == 3], [4, 5, 1], 0).astype(np.int16)  # FeTA -> atlas values
    atlas[15:17, 10:22, 10:12] = 8  # corpus callosum: white matter in FeTA, unknown to the FeTA convention
    anat = tmp_path / "bids" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    nib.save(image, anat / "sub-01_T2w.nii.gz")
    nib.save(nib.Nifti1Image(atlas, AFFINE), anat / "sub-01_T2w_dseg.nii.gz")
    (tmp_path / "bids" / "sub-02" / "anat").mkdir(parents=True)
    nib.save(image, tmp_path / "bids" / "sub-02" / "anat" / "sub-02_T2w.nii.gz")  # no label map
    return tmp_path / "bids"


def test_cli_writes_the_layout_and_refuses_to_overwrite(tmp_path, capsys):
    bids = _bids(tmp_path)
    out = tmp_path / "out"
    args = ["seeds", str(bids), "--out", str(out), "--convention", "atlas", "--max-subclasses", "2"]
    assert main(args) == 0
    stem = "sub-01_T2w_dseg"
    paths = [labels_path(out, "01", stem)] + [seed_path(out, "01", stem, k, m) for k in (1, 2) for m in (1, 2, 3)]
    assert all(p.exists() for p in paths)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz")) == sorted(p.relative_to(out).as_posix() for p in paths)
    printed = capsys.readouterr().out
    assert "sub-02_T2w.nii.gz: no label map found beside it" in printed and "sub-01_T2w_dseg.nii.gz" in printed
    loaded = load_seeds(out, "sub-01")
    assert loaded.layers[2][3].max() == 31 and (loaded.subject, loaded.stem) == ("sub-01", stem)
    feta = np.asarray(nib.load(paths[0]).dataobj)
    assert feta.dtype == np.int16 and set(np.unique(feta)) == {0, 1, 2, 3}

    stamps = [p.stat().st_mtime_ns for p in paths]
    assert main(args) == 0
    assert "seeds exist, skipped" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in paths] == stamps

    paths[0].unlink()  # as a run killed before its last file (the label map) leaves the subject
    assert main(args) == 0
    assert "sub-01: warning: 6 of 7 seed files of sub-01 were left by an interrupted run: made again" in capsys.readouterr().out
    assert all(p.exists() for p in paths) and load_seeds(out, "sub-01").layers[2][3].max() == 31

    paths[0].unlink()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), paths[3])  # a file of the user's among fss's
    assert main(args) == 1
    assert f"6 of 7 seed files of sub-01 exist and {paths[3]} was not written by fss seeds" in capsys.readouterr().out
    assert nib.load(paths[3]).shape == (4, 4, 4)
    assert main([*args, "--overwrite"]) == 0
    assert all(p.exists() for p in paths) and nib.load(paths[3]).shape != (4, 4, 4)


def test_cli_pair_mode_and_bad_arguments(tmp_path, capsys):
    bids = _bids(tmp_path)
    anat = bids / "sub-01" / "anat"
    args = [
        "seeds",
        "--image",
        str(anat / "sub-01_T2w.nii.gz"),
        "--labels",
        str(anat / "sub-01_T2w_dseg.nii.gz"),
        "--subject",
        "x1",
        "--out",
        str(tmp_path / "pair"),
        "--convention",
        "atlas",
        "--max-subclasses",
        "1",
    ]
    assert main(args) == 0
    assert seed_path(tmp_path / "pair", "x1", "sub-01_T2w_dseg", 1, 3).exists()
    assert main(["seeds", "--image", "a.nii.gz"]) == 2
    assert "give --image, --labels, --subject and --out" in capsys.readouterr().err
    assert main(["seeds", str(bids), "--max-subclasses", "1"]) == 1  # labels in the atlas convention, read as FeTA
    assert "does not define" in capsys.readouterr().out


def test_seed_comparison_orders_their_subclasses_by_intensity_and_resamples_them_onto_our_grid():
    image = np.zeros((8, 8, 8), np.float32)
    image[:, :, :3] = 100.0  # dark part of the CSF
    image[:, :, 3:] = 200.0  # bright part
    ours = np.full((8, 8, 8), 10, np.uint8)  # meta-label 1, K = 2: subclass 0 dark, 1 bright (in order of intensity)
    ours[:, :, 3:] = 11
    fine = np.repeat(np.repeat(np.repeat(ours, 2, 0), 2, 1), 2, 2)  # the same split on a grid of half the voxel size ...
    theirs = np.where(fine == 10, 11, 10).astype(np.uint8)  # ... numbered the other way round
    theirs[:, :, 6:8] = 11  # and their dark subclass (11) one of our slices thicker
    fine_affine = np.diag([0.5, 0.5, 0.5, 1.0])
    fine_affine[:3, 3] = -0.2  # fine voxels 2k and 2k + 1 cover coarse voxel k, whose centre lies nearest to 2k
    fractions, agreement = compare_seeds(Seeds({2: {1: ours}}, np.eye(4)), Seeds({2: {1: theirs}}, fine_affine), image, meta_labels=(1,))
    assert fractions[["subclass", "ours"]].values.tolist() == [[0, 3 / 8], [1, 5 / 8]]
    assert fractions.reference.tolist() == pytest.approx([4 / 8, 4 / 8]) and fractions.difference.tolist() == pytest.approx([-1 / 8, 1 / 8])
    assert agreement["same subclass"].tolist() == pytest.approx([7 / 8])  # all but the slice their dark subclass took
