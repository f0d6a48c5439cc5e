"""Net2Net: widening and deepening preserve the function (eval mode), change the shapes as stated, and the
student-replaceable cores are really the ones used."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nas_lab.counting import count_model
from nas_lab.net2net import (
    ConvBNReLU,
    ConvNet,
    identity_conv_bn,
    net2deeper,
    net2wider,
    node_statistics,
    widen_conv_pair,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _x(n: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed))  # (N, 1, 12, 12)


def _trained_like(widths=(4, 6, 5), strides=(1, 2, 1)) -> ConvNet:
    """A net with non-trivial BN statistics and affine parameters, as after training."""
    model = ConvNet(widths, strides, seed=3)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in model.layers:
            c = layer.bn.num_features
            layer.bn.weight.copy_(0.5 + torch.rand(c, generator=gen))
            layer.bn.bias.copy_(torch.randn(c, generator=gen) * 0.3)
        model.train()
        for seed in range(5):
            model(_x(64, seed + 10))  # running statistics of real activations
    return model.eval()


@pytest.mark.parametrize("layer, width", [(0, 5), (0, 11), (1, 12), (1, 7), (2, 6), (2, 16)])
def test_net2wider_preserves_the_function(layer, width):
    model = _trained_like()
    before = copy.deepcopy(model.state_dict())
    wide = net2wider(model, layer, width, seed=layer).eval()
    x = _x()
    torch.testing.assert_close(wide(x), model(x), atol=1e-5, rtol=1e-5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the argument is untouched
    wide.train(), model.train()  # copies share BN batch statistics, so train mode is preserved too
    torch.testing.assert_close(wide(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_net2wider_changes_channels_and_parameters_as_expected(layer):
    model = _trained_like()
    old = model.spec[layer][0]
    wide = net2wider(model, layer, old + 3)
    assert wide.spec[layer] == (old + 3, model.spec[layer][1])
    assert [s for i, s in enumerate(wide.spec) if i != layer] == [s for i, s in enumerate(model.spec) if i != layer]
    c_in = model.in_channels if layer == 0 else model.spec[layer - 1][0]
    fan_out = 10 if layer == 2 else model.spec[layer + 1][0] * 9  # head rows, or next conv's filters x 3x3
    extra = 3 * (c_in * 9 + fan_out + 2)  # filters in, weights out, BN weight + bias
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(wide) - count(model) == extra
    assert count_model(wide, _x(1)).params - count_model(model, _x(1)).params == 3 * (c_in * 9 + fan_out)


def test_widen_conv_pair_copies_and_divides_by_the_copy_count():
    model = _trained_like()
    conv, bn, nxt = model.layers[0].conv, model.layers[0].bn, model.layers[1].conv  # 4 -> 6 channels
    mapping = torch.tensor([0, 1, 2, 3, 0, 0, 2])  # unit 0 three times, unit 2 twice
    c2, b2, n2 = widen_conv_pair(conv, bn, nxt, mapping)
    assert torch.equal(c2.weight[4], conv.weight[0]) and torch.equal(c2.weight[6], conv.weight[2])
    assert torch.equal(b2.running_var[5], bn.running_var[0]) and torch.equal(b2.bias[6], bn.bias[2])
    torch.testing.assert_close(n2.weight[:, 0], nxt.weight[:, 0] / 3)
    torch.testing.assert_close(n2.weight[:, 5], nxt.weight[:, 0] / 3)
    torch.testing.assert_close(n2.weight[:, 6], nxt.weight[:, 2] / 2)
    torch.testing.assert_close(n2.weight[:, 1], nxt.weight[:, 1])
    with pytest.raises(ValueError, match="each of the 4 old units"):
        widen_conv_pair(conv, bn, nxt, torch.tensor([0, 1, 2, 2]))


def _no_division(conv, bn, next_layer, mapping):
    """A typical student bug: copy the next layer's weights but forget to divide."""
    c, b, n = widen_conv_pair(conv, bn, next_layer, mapping)
    counts = torch.bincount(mapping, minlength=conv.out_channels)[mapping].float()
    with torch.no_grad():
        n.weight.mul_(counts.view(1, -1, *([1] * (n.weight.dim() - 2))))
    return c, b, n


def test_net2wider_uses_the_given_core_and_the_oracle_catches_a_wrong_one():
    model, x = _trained_like(), _x()
    calls = []

    def spy(*args):
        calls.append(args[3])
        return widen_conv_pair(*args)

    torch.testing.assert_close(net2wider(model, 1, 9, widen=spy).eval()(x), model(x), atol=1e-5, rtol=1e-5)
    assert len(calls) == 1 and len(calls[0]) == 9
    wrong = net2wider(model, 1, 9, widen=_no_division).eval()
    assert (wrong(x) - model(x)).abs().max() > 1e-3


@pytest.mark.parametrize("after", [0, 1, 2])
@pytest.mark.parametrize("with_calib", [False, True])
def test_net2deeper_preserves_the_function(after, with_calib):
    model, x = _trained_like(), _x()
    deep = net2deeper(model, after, calib=_x(64, 5) if with_calib else None).eval()
    assert len(deep.layers) == len(model.layers) + 1 and deep.spec[after + 1] == (model.spec[after][0], 1)
    torch.testing.assert_close(deep(x), model(x), atol=1e-5, rtol=1e-5)


def test_identity_bn_in_train_mode_needs_the_real_statistics():
    model, x = _trained_like(), _x(64)
    h = model.nodes(x)[2]  # (64, 6, 6, 6): the activations a layer inserted after layer 1 would see
    mean, var = node_statistics(model, 2, x)
    matched = ConvBNReLU(*identity_conv_bn(6, 3, mean, var)).train()
    plain = ConvBNReLU(*identity_conv_bn(6, 3)).train()
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(h), h, atol=1e-5, rtol=1e-5)  # both exact in eval mode
        torch.testing.assert_close(matched.eval()(h), h, atol=1e-5, rtol=1e-5)
        assert (matched.train()(h) - h).abs().max() < 1e-3  # batch statistics = the statistics it was given
        assert (plain.train()(h) - h).abs().max() > 0.1  # standardises and cuts: not the identity in train mode


def test_noise_keeps_outputs_close_but_different_and_is_seeded():
    model, x = _trained_like(), _x()
    y = model(x)
    scale = y.abs().max()
    for make in (lambda s: net2wider(model, 1, 12, seed=s, noise=0.02),
                 lambda s: net2deeper(model, 1, calib=x, seed=s, noise=0.02)):
        a, b, c = make(7).eval(), make(7).eval(), make(8).eval()
        diff = (a(x) - y).abs().max()
        assert 1e-4 < diff < 0.1 * scale
        assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))


def test_wider_and_deeper_compose_and_keep_training():
    model, x = _trained_like(), _x()
    grown = net2deeper(net2wider(model, 0, 8, seed=2), 0, calib=x)
    grown = net2wider(grown, 1, 10, seed=3).eval()
    assert grown.spec == [(8, 1), (10, 1), (6, 2), (5, 1)]
    torch.testing.assert_close(grown(x), model(x), atol=1e-5, rtol=1e-5)
    y = torch.arange(len(x)) % 10
    opt = torch.optim.SGD(grown.parameters(), lr=0.05)
    grown.train()
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(grown(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_bad_arguments():
    model = _trained_like()
    with pytest.raises(ValueError, match="must be larger"):
        net2wider(model, 0, 4)
    with pytest.raises(ValueError, match="odd kernel"):
        identity_conv_bn(4, 2)
    with pytest.raises(ValueError, match="one stride per width"):
        ConvNet([4, 8], [1])
