"""The elastic supernet: extraction equality, every elastic dimension, BN recalibration, channel sorting."""

import random

import pytest
import torch
import torch.nn as nn

from nas_lab.elastic import ElasticBatchNorm2d, ElasticDepthwiseConv2d
from nas_lab.space import Arch, ArchError, SearchSpace
from nas_lab.supernet import OFASupernet, recalibrate_bn

torch.set_num_threads(1)
SPACE = SearchSpace()


@pytest.fixture(scope="module")
def net() -> OFASupernet:
    """A supernet with random, non-trivial BN statistics and kernel transforms (so copying bugs show)."""
    torch.manual_seed(0)
    n = OFASupernet(SPACE)
    with torch.no_grad():
        for m in n.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.normal_(1, 0.3)
                m.bias.normal_(0, 0.3)
    recalibrate_bn(n, torch.randn(64, 1, 28, 28))  # real statistics of the largest net keep signals alive
    with torch.no_grad():
        for m in n.modules():
            if isinstance(m, nn.BatchNorm2d):  # then make them distinct per channel, so copying bugs show
                m.running_mean.add_(0.1 * torch.randn_like(m.running_mean))
                m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.8, 1.25))
        for name, p in n.named_parameters():
            if "transform" in name:
                p.add_(0.05 * torch.randn_like(p))
        n.classifier.weight.normal_(0, 1.0)  # make small feature differences visible in the logits
    return n.eval()


def archs(n: int, seed: int = 0) -> list[Arch]:
    rng = random.Random(seed)
    return [SPACE.largest(), SPACE.smallest()] + [SPACE.sample(rng) for _ in range(n)]


@pytest.mark.parametrize("arch", archs(12), ids=str)
def test_extracted_subnet_equals_the_active_path(net, arch):
    net.set_active_subnet(arch)
    sub = net.get_active_subnet()
    assert not sub.training
    x = torch.randn(3, 1, arch.resolution, arch.resolution)
    with torch.no_grad():
        torch.testing.assert_close(sub(x), net(x), rtol=1e-4, atol=1e-5)
    assert sum(1 for _ in sub.blocks) == sum(arch.depths)


def test_extraction_in_training_mode_uses_batch_statistics_too(net):
    arch = archs(1, seed=5)[-1]
    net.set_active_subnet(arch)
    net.train()
    try:
        sub = net.get_active_subnet()
        x = torch.randn(8, 1, arch.resolution, arch.resolution)
        torch.testing.assert_close(sub(x), net(x), rtol=1e-4, atol=1e-4)
    finally:
        net.eval()
    assert sub.training


def test_extracted_subnet_is_independent_of_the_supernet(net):
    arch = SPACE.smallest()
    net.set_active_subnet(arch)
    sub = net.get_active_subnet()
    assert not any(p.data_ptr() == q.data_ptr() for p in sub.parameters() for q in net.parameters())
    assert all(type(m).__module__.startswith(("torch", "nas_lab.subnet")) for m in sub.modules())


def _output(net, arch, x):
    net.set_active_subnet(arch)
    with torch.no_grad():
        return net(x)


def test_elastic_kernel_uses_transformed_centre():
    conv = ElasticDepthwiseConv2d(4, (3, 5, 7))
    with torch.no_grad():
        conv.transform_7to5.copy_(torch.eye(25) * 2)
        conv.transform_5to3.copy_(torch.eye(9) * 3)
    w7 = conv.active_weight(4, 7)
    torch.testing.assert_close(conv.active_weight(4, 5), 2 * w7[:, :, 1:6, 1:6])
    torch.testing.assert_close(conv.active_weight(4, 3), 6 * w7[:, :, 2:5, 2:5])
    assert conv.active_weight(2, 3).shape == (2, 1, 3, 3)


def test_every_elastic_dimension_changes_the_output(net):
    base = Arch(28, 0.75, (2, 2, 2, 2), (5,) * 12, (4,) * 12)
    x28 = torch.randn(2, 1, 28, 28)
    y = _output(net, base, x28)
    variants = {
        "kernel": Arch(28, 0.75, (2, 2, 2, 2), (7,) + (5,) * 11, (4,) * 12),
        "expand": Arch(28, 0.75, (2, 2, 2, 2), (5,) * 12, (6,) + (4,) * 11),
        "depth": Arch(28, 0.75, (3, 2, 2, 2), (5,) * 12, (4,) * 12),
        "width": Arch(28, 1.0, (2, 2, 2, 2), (5,) * 12, (4,) * 12),
    }
    for name, arch in variants.items():
        assert (_output(net, arch, x28) - y).abs().max() > 1e-4, name
    for res in SPACE.resolutions:  # elastic resolution: the same weights run at every input size
        assert _output(net, Arch(res, 0.75, (2, 2, 2, 2), (5,) * 12, (4,) * 12),
                       torch.randn(2, 1, res, res)).shape == (2, 10)


def test_inactive_weights_do_not_matter(net):
    """Blocks beyond a stage's depth, channels beyond the width and expand, and kernel corners are unused."""
    arch = Arch(24, 0.5, (1, 2, 1, 2), (3,) * 12, (3,) * 12)
    x = torch.randn(2, 1, 24, 24)
    before = _output(net, arch, x)
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        with torch.no_grad():
            for b in (1, 2, 5, 7, 8, 11):  # inactive block slots (stage-major, 3 per stage)
                for p in net.blocks[b].parameters():
                    p.normal_()
            ch = SPACE.channels(0.5)
            net.stem.conv.weight[ch["stem"]:].normal_()
            net.blocks[0].expand_conv.weight[ch["stem"] * 3:].normal_()
            net.blocks[0].depthwise_conv.weight[:, :, 0].normal_()  # 7x7 border, unused by k=3
            net.head.conv.weight[ch["head"]:].normal_()
            net.classifier.weight[:, ch["head"]:].normal_()
        torch.testing.assert_close(_output(net, arch, x), before)
    finally:
        net.load_state_dict(saved)


def test_sorting_expanded_channels_preserves_the_full_network(net):
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        x = torch.randn(2, 1, 28, 28)
        before = _output(net, SPACE.largest(), x)
        net.sort_expanded_channels()
        torch.testing.assert_close(_output(net, SPACE.largest(), x), before, rtol=1e-4, atol=1e-5)
        block = net.blocks[0]
        importance = block.project_conv.weight.abs().sum(dim=(0, 2, 3))
        assert torch.all(importance[:-1] >= importance[1:])
    finally:
        net.load_state_dict(saved)


def test_bn_recalibration_matches_the_direct_statistics(net):
    arch = SPACE.smallest()
    net.set_active_subnet(arch)
    sub = net.get_active_subnet()
    images = torch.randn(300, 1, 16, 16)
    recalibrate_bn(sub, images, batch_size=100)
    assert not sub.training
    conv, bn = sub.stem[0], sub.stem[1]
    with torch.no_grad():
        pre = conv(images)  # the stem BN sees exactly these activations
    torch.testing.assert_close(bn.running_mean, pre.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    # average of per-batch unbiased variances, as cumulative BN averaging computes it
    per_batch = torch.stack([pre[i:i + 100].var(dim=(0, 2, 3)) for i in range(0, 300, 100)])
    torch.testing.assert_close(bn.running_var, per_batch.mean(0), rtol=1e-4, atol=1e-5)


def test_elastic_bn_cumulative_average_on_a_slice():
    bn = ElasticBatchNorm2d(8)
    bn.reset_running_stats()
    bn.momentum = None
    bn.train()
    xs = [torch.randn(4, 5, 3, 3) + i for i in range(3)]
    for x in xs:
        bn(x)
    expected = torch.stack([x.mean(dim=(0, 2, 3)) for x in xs]).mean(0)
    torch.testing.assert_close(bn.running_mean[:5], expected, rtol=1e-5, atol=1e-5)
    assert torch.all(bn.running_mean[5:] == 0)


def test_set_active_subnet_rejects_archs_outside_the_space(net):
    with pytest.raises(ArchError, match="allowed values"):
        net.set_active_subnet(Arch(32, 1.0, (3,) * 4, (7,) * 12, (6,) * 12))
    with pytest.raises(ArchError, match="allowed values"):
        net.set_active_subnet(Arch(28, 1.0, (4, 3, 3, 3), (7,) * 12, (6,) * 12))


def test_sample_active_subnet_is_seeded(net):
    a = net.sample_active_subnet(random.Random(11))
    assert net.active == a == SPACE.sample(random.Random(11))
