import numpy as np
import pytest

from fss.labels import META_LABELS, N_CLASSES, TISSUES, conventions_that_fit, to_feta, to_meta_labels


def test_tissue_table_is_indexed_by_value():
    assert [t.value for t in TISSUES] == list(range(N_CLASSES))
    assert len({t.color for t in TISSUES}) == N_CLASSES, "each tissue needs its own colour"
    assert TISSUES[3].short == "WM" and TISSUES[1].short == "eCSF"


def test_atlas_convention_maps_every_tissue_to_feta():
    atlas = np.arange(9)
    expected = [0, 3, 4, 5, 1, 2, 6, 7, 3]  # corpus callosum (8) is white matter in FeTA
    np.testing.assert_array_equal(to_feta(atlas, "atlas"), expected)
    assert to_feta(atlas, "atlas").dtype == np.int16


def test_float_labels_with_whole_values_are_accepted():
    np.testing.assert_array_equal(to_feta(np.array([[0.0, 4.0]]), "atlas"), [[0, 1]])


@pytest.mark.parametrize("bad, unexpected", [(np.array([0, 3, 9, 12]), "[9, 12]"), (np.array([-1, 0, 2]), "[-1]")])
def test_unexpected_values_are_named(bad, unexpected):
    with pytest.raises(ValueError) as error:
        to_feta(bad, "atlas")
    assert unexpected in str(error.value)


def test_non_integer_labels_and_unknown_convention_are_refused():
    with pytest.raises(ValueError, match="non-integer"):
        to_feta(np.array([0.0, 1.5]))
    with pytest.raises(ValueError, match="unknown label convention 'freesurfer'"):
        to_feta(np.array([0]), "freesurfer")


def test_meta_labels_group_tissues():
    # FeTA 0 BG, 1 eCSF, 2 GM, 3 WM, 4 VEN, 5 CBM, 6 DGM, 7 BS -> 1 CSF, 2 grey matter, 3 white matter and the rest
    np.testing.assert_array_equal(to_meta_labels(np.arange(8)), [0, 1, 2, 3, 1, 3, 2, 3])
    assert [name for name, _ in META_LABELS.values()][:3] == ["CSF", "grey matter", "white matter"]


def test_the_conventions_that_fit_a_label_map_are_those_that_define_all_its_values():
    assert conventions_that_fit(np.array([0, 3, 7], np.int16)) == ["feta", "atlas"]
    assert conventions_that_fit(np.array([0, 8], np.uint8)) == ["atlas"]  # FeTA has no 8
    assert conventions_that_fit(np.array([0, 9])) == []
    assert conventions_that_fit(np.array([0.0, 3.0])) == []  # fractional types are read as no convention
