import pytest
import torch

from fss.unet import UNet, count_parameters


def test_shapes_and_parameter_count():
    model = UNet(channels=(4, 8, 16))
    assert model(torch.rand(2, 1, 8, 12, 16)).shape == (2, 8, 8, 12, 16)
    assert model.multiple == 4
    # default architecture: counted once here so that a change to it is noticed
    assert count_parameters(UNet()) == 5_647_976


def test_added_skips_halve_the_decoders_first_convolutions():
    concatenated, added = UNet(channels=(4, 8, 16)), UNet(channels=(4, 8, 16), skip="add")
    x = torch.rand(1, 1, 8, 8, 8)
    assert added(x).shape == concatenated(x).shape == (1, 8, 8, 8, 8)
    assert [block[0].in_channels for block in added.decoder] == [4, 8]
    assert [block[0].in_channels for block in concatenated.decoder] == [8, 16]
    # each decoder level's first convolution loses a 3x3x3 kernel per output channel and skip channel
    assert count_parameters(concatenated) - count_parameters(added) == 27 * (4 * 4 + 8 * 8)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="multiple of 4"):
        UNet(channels=(4, 8, 16))(torch.rand(1, 1, 8, 10, 8))
    with pytest.raises(ValueError, match="at least two levels"):
        UNet(channels=(4,))
    with pytest.raises(ValueError, match="skip must be one of"):
        UNet(channels=(4, 8), skip="multiply")
