"""Peak activation memory and training activations, checked against counts done by hand.

Every expected number below is worked out in the comment next to it; a rule that counts the residual
input for the first layer of a block, forgets it for later layers, counts BN/ReLU, or scales with the
batch would fail at least one of them.
"""

import pytest
import torch
import torchvision
from torch import nn

from nas_lab.blocks import BasicBlock, ConvBlock, InvertedBottleneck
from nas_lab.memory import (
    is_residual_block,
    peak_memory,
    peak_memory_kb,
    saved_activation_elements,
    training_activation_bytes,
    weight_bytes,
)
from nas_lab.subnet import MBConv

torch.set_num_threads(1)


def plain_stack() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def totals(report) -> list[int]:
    return [layer.bytes for layer in report.layers]


def test_plain_conv_stack_hand_count():
    report = peak_memory(plain_stack(), torch.randn(1, 3, 8, 8))
    # conv 3->8 at 8x8: 3*64 + 8*64 = 192 + 512; conv 8->16 stride 2: 512 + 16*16; linear: 16 + 10.
    assert totals(report) == [704, 768, 26]
    assert [layer.residual_elements for layer in report.layers] == [0, 0, 0]
    assert report.peak_bytes == 768
    assert report.peak_kb == pytest.approx(768 / 1024)
    assert report.peak_layer.name == "3"


def test_batch_size_does_not_change_the_peak():
    model = plain_stack()
    assert peak_memory(model, torch.randn(4, 3, 8, 8)).peak_bytes == 768


def test_mbconv_with_residual_hand_count():
    # c=4, expand 6 -> 24 channels, 5x5: block input 4*25 = 100, expanded 24*25 = 600.
    block = InvertedBottleneck(4, 4, expand=6)
    assert block.use_residual
    report = peak_memory(block, torch.randn(1, 4, 5, 5))
    # expand: input IS the block input -> 100 + 600, nothing kept extra;
    # depthwise: 600 + 600 + 100 kept; project: 600 + 100 + 100 kept.
    assert totals(report) == [700, 1300, 800]
    assert [layer.residual_elements for layer in report.layers] == [0, 100, 100]
    assert report.peak_bytes == 1300


def test_mbconv_without_residual_hand_count():
    report = peak_memory(InvertedBottleneck(4, 4, expand=6, residual=False), torch.randn(1, 4, 5, 5))
    assert totals(report) == [700, 1200, 700]
    assert report.peak_bytes == 1200


def test_strided_mbconv_has_no_residual():
    # 4 -> 8, stride 2 at 6x6: in 4*36 = 144, expanded 24*36 = 864, after stride 24*9 = 216, out 8*9 = 72.
    block = MBConv(4, 8, kernel_size=3, expand=6, stride=2)
    assert not block.use_residual
    assert totals(peak_memory(block, torch.randn(1, 4, 6, 6))) == [144 + 864, 864 + 216, 216 + 72]


def test_residual_blocks_in_sequence_keep_only_their_own_input():
    # Two residual MBConvs in a row: each keeps its own input (100), never the other's.
    model = nn.Sequential(InvertedBottleneck(4, 4, expand=6), InvertedBottleneck(4, 4, expand=6))
    assert totals(peak_memory(model, torch.randn(1, 4, 5, 5))) == [700, 1300, 800] * 2


def test_resnet_block_with_projection_shortcut():
    # 64 -> 128, stride 2 at 8x8: input 64*64 = 4096, outputs 128*16 = 2048.
    report = peak_memory(BasicBlock(64, 128, stride=2), torch.randn(1, 64, 8, 8))
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name["conv1.0"].bytes == 4096 + 2048          # input is the block input
    assert by_name["conv2.0"].bytes == 2048 + 2048 + 4096   # + the block input kept for the add
    assert by_name["shortcut.0"].bytes == 4096 + 2048       # projection reads the block input itself
    assert report.peak_bytes == 8192


def test_residual_detection():
    assert is_residual_block(InvertedBottleneck(8, 8)) and not is_residual_block(InvertedBottleneck(8, 16))
    assert not is_residual_block(ConvBlock(8, 8)) and not is_residual_block(nn.Conv2d(8, 8, 1))
    tv_resnet = torchvision.models.resnet18()
    assert is_residual_block(tv_resnet.layer1[0]) and is_residual_block(tv_resnet.layer2[0])
    tv_mbv2 = torchvision.models.mobilenet_v2()
    assert is_residual_block(tv_mbv2.features[3]) and not is_residual_block(tv_mbv2.features[2])


def test_torchvision_resnet18_and_mobilenetv2_peaks_by_hand():
    x = torch.randn(1, 3, 224, 224)
    # ResNet-18 peaks at its stem conv: 3*224*224 in + 64*112*112 out.
    r18 = peak_memory(torchvision.models.resnet18(), x)
    assert r18.peak_bytes == 3 * 224 * 224 + 64 * 112 * 112 and r18.peak_layer.name == "conv1"
    # MobileNetV2 peaks at the stride-2 depthwise conv of its 2nd block: 96*112*112 in, 96*56*56 out.
    mbv2 = peak_memory(torchvision.models.mobilenet_v2(), x)
    assert mbv2.peak_bytes == 96 * 112 * 112 + 96 * 56 * 56
    assert mbv2.peak_layer.name == "features.2.conv.1.0"
    # features.3 (24 -> 144 -> 24 at 56x56) has a residual: its depthwise conv keeps 24*56*56 extra.
    dw3 = next(layer for layer in mbv2.layers if layer.name == "features.3.conv.1.0")
    assert dw3.bytes == 2 * 144 * 56 * 56 + 24 * 56 * 56
    assert peak_memory_kb(torchvision.models.resnet18(), x) == pytest.approx(r18.peak_bytes / 1024)


def test_training_activation_hand_count():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 8 * 8, 10))
    x = torch.randn(2, 3, 8, 8)
    # stored per sample: conv input 192 + BN input 512 + ReLU input 512 + linear input 512 (Flatten: none).
    assert saved_activation_elements(model, x) == 1728
    assert training_activation_bytes(model, x, batch_size=16) == 16 * 4 * 1728
    assert training_activation_bytes(model, x, batch_size=16, bytes_per_element=2) == 16 * 2 * 1728


def test_weight_bytes_and_mode_restored():
    model = plain_stack().train()
    n = sum(p.numel() for p in model.parameters())
    assert weight_bytes(model) == n and weight_bytes(model, 4) == 4 * n
    peak_memory(model, torch.randn(1, 3, 8, 8))
    saved_activation_elements(model, torch.randn(1, 3, 8, 8))
    assert model.training
