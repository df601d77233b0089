"""The periodic conditional U-Net."""

from __future__ import annotations

import pytest
import torch

from diffinfer.diffusion.unet import UNet, UNetConfig
from diffinfer.errors import InputError


def _randomised(net: UNet) -> UNet:
    # the output layer starts at zero; give it weights so the test sees the whole network
    torch.manual_seed(0)
    for p in net.out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return net.eval()


@pytest.mark.parametrize("attention", [(), (2,)])
def test_network_commutes_with_periodic_shifts(attention):
    net = _randomised(
        UNet(
            UNetConfig(
                base_channels=8, channel_mults=(1, 2, 2), attention_levels=attention, embed_dim=32
            )
        )
    )
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 32, 32, generator=g)
    t = torch.tensor([10, 700])
    theta = torch.tensor([[0.3, 0.8], [0.2, 0.9]])
    with torch.no_grad():
        out = net(x, t, theta)
        step = net.downsampling  # shifts by multiples of the total stride
        for shift in [(step, 0), (0, 3 * step), (2 * step, 5 * step)]:
            shifted = net(torch.roll(x, shift, dims=(-2, -1)), t, theta)
            assert torch.allclose(shifted, torch.roll(out, shift, dims=(-2, -1)), atol=1e-5)
    assert out.shape == x.shape and out.abs().mean() > 1e-3


def test_fully_convolutional_and_conditioned():
    net = _randomised(UNet(UNetConfig(base_channels=8, embed_dim=32)))
    with torch.no_grad():
        small = net(torch.randn(1, 1, 16, 16), torch.tensor([5]), torch.tensor([[0.3, 0.8]]))
        big = net(torch.randn(1, 1, 64, 64), torch.tensor([5]), torch.tensor([[0.3, 0.8]]))
        x = torch.randn(1, 1, 16, 16)
        a = net(x, torch.tensor([5]), torch.tensor([[0.3, 0.8]]))
        b = net(x, torch.tensor([5]), torch.tensor([[0.45, 0.8]]))
        c = net(x, torch.tensor([900]), torch.tensor([[0.3, 0.8]]))
    assert small.shape == (1, 1, 16, 16) and big.shape == (1, 1, 64, 64)
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
    assert UNetConfig.from_dict(net.config.to_dict()) == net.config


def test_bad_map_shapes():
    net = UNet(UNetConfig(base_channels=8, embed_dim=32))
    with pytest.raises(InputError, match="divisible"):
        net(torch.zeros(1, 1, 18, 18), torch.tensor([1]), torch.tensor([[0.3, 0.8]]))
    with pytest.raises(InputError, match="shape"):
        net(torch.zeros(1, 18, 18), torch.tensor([1]), torch.tensor([[0.3, 0.8]]))


@pytest.mark.parametrize("stride", [1, 2])
def test_the_periodic_convolution_is_the_circular_conv2d_with_its_own_gradient(stride) -> None:
    """PeriodicConv2d computes nn.Conv2d(padding_mode="circular")'s function and gradients
    (its own backward folds the padding onto the edges); their weights load into each
    other, so the shipped models keep theirs."""
    from torch import nn

    from diffinfer.diffusion.unet import PeriodicConv2d, _CircularPad

    torch.manual_seed(0)
    ref = nn.Conv2d(3, 4, 3, stride=stride, padding=1, padding_mode="circular").double()
    conv = PeriodicConv2d(3, 4, stride=stride).double()
    conv.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64, requires_grad=True)
    y_ref, y = ref(x), conv(x)
    torch.testing.assert_close(y, y_ref)
    w = torch.randn_like(y)
    g_ref = torch.autograd.grad((y_ref * w).sum(), (x, ref.weight, ref.bias))
    g = torch.autograd.grad((y * w).sum(), (x, conv.weight, conv.bias))
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # the path without a gradient
        torch.testing.assert_close(conv(x), y_ref)
    small = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_CircularPad.apply, (small,))
    assert torch.autograd.gradgradcheck(_CircularPad.apply, (small,))
