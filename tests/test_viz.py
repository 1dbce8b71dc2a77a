import matplotlib
import numpy as np
import pytest

from fss.viz import plot_comparison, plot_planes

matplotlib.use("Agg")


def test_comparison_rows_share_their_slices_and_mark_left_and_right():
    image = np.random.default_rng(0).random((20, 24, 16))
    reference = np.zeros(image.shape, np.int16)
    reference[4:10, 6:20, 3:9] = 3
    prediction = np.zeros(image.shape, np.int16)
    prediction[12:18, 2:8, 8:14] = 2  # elsewhere: the rows must still show the reference's slices
    figure = plot_comparison(image, {"reference": reference, "prediction": prediction})
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:3] == ["reference: sagittal 6", "reference: coronal 12", "reference: axial 6"]  # the centre of the first map
    assert [t.split(": ")[1] for t in titles[3:]] == [t.split(": ")[1] for t in titles[:3]]
    letters = [[text.get_text() for text in ax.texts] for ax in figure.axes]
    assert letters[0] == [] and letters[1] == letters[2] == ["L", "R"]  # the sagittal view has no left and right
    assert sorted(t.get_text() for t in figure.legends[0].get_texts()) == ["GM", "WM"]
    with pytest.raises(ValueError, match="prediction"):
        plot_comparison(image, {"prediction": prediction[:10]})
    assert len(plot_planes(image).axes) == 3
