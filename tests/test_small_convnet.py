"""The small ConvNet of gray images: a stride-2 stem above 16 px, the same weights at every size."""
from __future__ import annotations

import torch

from engine.nn.backbones import build_backbone


def _last_block_side(image_size: int) -> int:
    net = build_backbone("auto", image_size, 1)
    seen = []
    pool = net.features[-2]  # the global average pool: what reaches it is the last block's map
    pool.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[-1]))
    net(torch.zeros(2, 1, image_size, image_size))
    return seen[0]


def test_the_last_block_sees_the_digit_whole_at_28_px_and_8_px_digits_keep_their_net():
    assert _last_block_side(28) <= 4
    assert _last_block_side(8) == 2


def test_the_stem_stride_changes_no_weight_so_checkpoints_keep_their_shapes():
    small, large = build_backbone("auto", 8, 1).state_dict(), build_backbone("auto", 28, 1).state_dict()
    assert {k: v.shape for k, v in small.items()} == {k: v.shape for k, v in large.items()}
