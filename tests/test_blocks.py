"""Building blocks: shapes, the ResNeXt and channel-shuffle identities, and the lecture's cost ratios.

Each lecture ratio is computed three independent ways: a hand formula written out here (not the
``nas_lab.counting`` formulas), the hook counter ``count_model``, and torchprofile's traced count.
"""

import pytest
import torch
from torch import nn

from nas_lab.blocks import (
    BasicBlock,
    Bottleneck,
    ConvBlock,
    DepthwiseSeparable,
    GroupedBottleneck,
    InvertedBottleneck,
    MultiPathBottleneck,
    ShuffleUnit,
    channel_shuffle,
    multipath_from_grouped,
)
from nas_lab.counting import count_model, torchprofile_macs
from nas_lab.subnet import MBConv

torch.set_num_threads(1)

BLOCKS = [ConvBlock, BasicBlock, Bottleneck, GroupedBottleneck, MultiPathBottleneck, DepthwiseSeparable,
          InvertedBottleneck]


@pytest.mark.parametrize("block_cls", BLOCKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("c_in, c_out, stride", [(64, 64, 1), (64, 128, 2)])
def test_block_shapes(block_cls, c_in, c_out, stride):
    block = block_cls(c_in, c_out, stride)
    assert block(torch.randn(2, c_in, 8, 8)).shape == (2, c_out, 8 // stride, 8 // stride)


@pytest.mark.parametrize("c_in, c_out, stride", [(48, 48, 1), (48, 96, 2)])
def test_shuffle_unit_shapes(c_in, c_out, stride):
    unit = ShuffleUnit(c_in, c_out, stride, groups=3)
    assert unit(torch.randn(2, c_in, 8, 8)).shape == (2, c_out, 8 // stride, 8 // stride)
    with pytest.raises(ValueError):
        ShuffleUnit(48, 96, 1)


def test_residual_flags():
    assert isinstance(InvertedBottleneck(16, 16), MBConv)
    assert InvertedBottleneck(16, 16).use_residual
    assert not InvertedBottleneck(16, 16, residual=False).use_residual
    assert not InvertedBottleneck(16, 16, 2).use_residual and not InvertedBottleneck(16, 24).use_residual
    assert Bottleneck(64, 64).use_residual and isinstance(Bottleneck(64, 64).shortcut, nn.Identity)
    assert not isinstance(Bottleneck(64, 128).shortcut, nn.Identity)


def test_bottleneck_vs_single_conv_lecture_ratio():
    """2048 -> 512 -> 512 -> 2048 bottleneck vs one 3x3 conv 2048 -> 2048, at 7x7: about 8.5x."""
    hw = 7 * 7
    hand_bottleneck_w = 2048 * 512 + 512 * 512 * 3 * 3 + 512 * 2048
    hand_conv_w = 2048 * 2048 * 3 * 3
    x = torch.randn(1, 2048, 7, 7)
    bottleneck, conv = Bottleneck(2048, 2048, mid=512), ConvBlock(2048, 2048)
    counted_b, counted_c = count_model(bottleneck, x), count_model(conv, x)
    assert counted_b.params == hand_bottleneck_w and counted_c.params == hand_conv_w
    assert counted_b.macs == hand_bottleneck_w * hw == torchprofile_macs(bottleneck, x)
    assert counted_c.macs == hand_conv_w * hw == torchprofile_macs(conv, x)
    ratio = counted_c.macs / counted_b.macs
    assert ratio == pytest.approx(8.47, abs=0.01)
    assert hand_conv_w / hand_bottleneck_w == pytest.approx(ratio)


def test_mobilenetv2_inverted_bottleneck_lecture_numbers():
    """160 -> 960 -> 960 -> 160 (expand 6, 3x3 depthwise) at 7x7."""
    hw = 7 * 7
    hand_w = 160 * 960 + 960 * 3 * 3 + 960 * 160
    x = torch.randn(1, 160, 7, 7)
    block = InvertedBottleneck(160, 160, expand=6)
    counted = count_model(block, x)
    assert counted.params == hand_w == 315_840
    assert counted.macs == hand_w * hw == torchprofile_macs(block, x)
    assert [layer.output_shape[1] for layer in counted.layers] == [960, 960, 160]  # expanded 6x


def randomise_bn(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.randn(m.num_features, generator=gen)
            m.bias.data = torch.randn(m.num_features, generator=gen)
            m.running_mean = torch.randn(m.num_features, generator=gen)
            m.running_var = torch.rand(m.num_features, generator=gen) + 0.5
    return model


@pytest.mark.parametrize("c_in, c_out, stride", [(64, 64, 1), (32, 64, 2)])
def test_grouped_bottleneck_equals_multipath(c_in, c_out, stride):
    torch.manual_seed(0)
    grouped = randomise_bn(GroupedBottleneck(c_in, c_out, stride, groups=8)).eval()
    multi = multipath_from_grouped(grouped).eval()
    assert isinstance(multi, MultiPathBottleneck) and len(multi.paths) == 8
    x = torch.randn(2, c_in, 8, 8)
    with torch.no_grad():
        assert torch.allclose(grouped(x), multi(x), atol=1e-5)
    assert count_model(grouped, x).macs == count_model(multi, x).macs
    assert count_model(grouped, x).params == count_model(multi, x).params


def test_channel_shuffle():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)  # channels a0 a1 | b0 b1 | c0 c1 = 0 1 | 2 3 | 4 5
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    y = torch.randn(2, 12, 3, 3)
    assert torch.equal(channel_shuffle(channel_shuffle(y, 3), 4), y)  # shuffling by C/g undoes it
    with pytest.raises(ValueError):
        channel_shuffle(y, 5)


def test_shuffle_lets_every_group_see_every_group():
    """After a grouped conv, output group j depends only on input group j; after a shuffle, on all of them.

    (Full mixing needs at least ``groups`` channels per group; 3 groups of 3 here.)
    """
    groups, c = 3, 9
    conv = nn.Conv2d(c, c, 1, groups=groups, bias=False)
    x = torch.randn(1, c, 1, 1, requires_grad=True)

    def sources(f) -> list[set[int]]:
        out, deps = f(x), []
        for j in range(groups):  # which input groups the first channel of output group j depends on
            (grad,) = torch.autograd.grad(out[0, j * c // groups].sum(), x, retain_graph=True)
            deps.append({i // (c // groups) for i in grad.flatten().nonzero().flatten().tolist()})
        return deps

    with torch.no_grad():
        conv.weight.fill_(1.0)
    assert sources(lambda t: conv(conv(t))) == [{0}, {1}, {2}]
    mixed = sources(lambda t: conv(channel_shuffle(conv(t), groups)))
    assert all(d == {0, 1, 2} for d in mixed)
