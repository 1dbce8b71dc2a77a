import pytest
import torch

from fss.unet import UNet, count_parameters


def test_shapes_and_parameter_count():
    model = UNet(channels=(4, 8, 16))
    assert model(torch.rand(2, 1, 8, 12, 16)).shape == (2, 8, 8, 12, 16)
    assert model.multiple == 4
    # default architecture: counted once here so that a change to it is noticed
    assert count_parameters(UNet()) == 5_647_976


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="multiple of 4"):
        UNet(channels=(4, 8, 16))(torch.rand(1, 1, 8, 10, 8))
    with pytest.raises(ValueError, match="at least two levels"):
        UNet(channels=(4,))
