"""Masked convolutions and gated PixelCNN blocks: gradients, masked weights that stay zero
through training, outputs that never see the current or a later position, and no blind spot."""
import numpy as np
import pytest

import tinyvae as tv
from tinyvae import nn, optim

from helpers import module_gradcheck, to_float64


class Stack(nn.Module):
    """Blocks A, B, B, ...: the output (the horizontal stack) at each position."""

    def __init__(self, channels=3, blocks=4, kernel=3, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.blocks = nn.ModuleList([nn.GatedBlock(channels, kernel, first=i == 0, rng=rng) for i in range(blocks)])

    def forward(self, x):
        v = h = x
        for block in self.blocks:
            v, h = block(v, h)
        return h


def test_masked_convolution_and_gated_block_gradcheck():
    rng = np.random.default_rng(1)
    assert module_gradcheck(nn.MaskedConv2d(2, 3, nn.pixelcnn.vertical_mask(3), rng), rng.normal(size=(2, 2, 4, 4)))

    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.GatedBlock(2, 3, first=False, rng=rng)

        def forward(self, v, h, c):
            out_v, out_h = self.block(v, h, c)
            return out_v * 0.5 + out_h
    for condition in ((2, 4, 1, 1), (2, 4, 4, 4)):        # a class vector, a map over the grid
        assert module_gradcheck(Both(), rng.normal(size=(2, 2, 4, 4)), rng.normal(size=(2, 2, 4, 4)),
                                rng.normal(size=condition))


# each mask and the window convolved: its ones and the centre, no row or column that is all zero
MASKS = {"vertical 3": (nn.pixelcnn.vertical_mask(3), (2, 3)), "vertical 5": (nn.pixelcnn.vertical_mask(5), (3, 5)),
         "horizontal A": (nn.pixelcnn.horizontal_mask(3, True), (1, 2)),
         "horizontal B": (nn.pixelcnn.horizontal_mask(5, False), (1, 3)),
         "scattered": (np.array([[0, 0, 1], [0, 0, 0], [1, 0, 0]], np.float32), (3, 3))}


@pytest.mark.parametrize("name", MASKS)
def test_the_cropped_window_is_the_whole_masked_convolution(name):
    """Convolving only the window around the mask's ones gives the full k×k masked
    convolution with 'same' padding, in value and in every gradient."""
    (mask, window), rng = MASKS[name], np.random.default_rng(3)
    layer = to_float64(nn.MaskedConv2d(2, 3, mask, rng))
    x = tv.tensor(rng.normal(size=(2, 2, 5, 6)), requires_grad=True)
    weight, bias = layer.conv.weight, layer.conv.bias
    full = tv.functional.conv2d(x, weight * tv.tensor(mask.astype(np.float64)), bias,
                                padding=(mask.shape[0] // 2, mask.shape[1] // 2))
    g = rng.normal(size=full.shape)
    grads = []
    for y in (full, layer(x)):
        for t in (x, weight, bias):
            t.grad = None
        (y * tv.tensor(g)).sum().backward()
        grads.append([t.grad.copy() for t in (x, weight, bias)])
    np.testing.assert_allclose(layer(x).numpy(), full.numpy(), rtol=1e-12, atol=1e-12)
    for ours, whole in zip(*grads):
        np.testing.assert_allclose(ours, whole, rtol=1e-12, atol=1e-12)
    assert layer.conv.weight[(slice(None), slice(None)) + layer.window].shape[2:] == window


def test_masked_weights_stay_exactly_zero_through_training():
    rng = np.random.default_rng(2)
    layer = nn.MaskedConv2d(3, 4, nn.pixelcnn.horizontal_mask(5, first=True), rng)
    opt = optim.Adam(layer.parameters(), lr=0.05)
    x, target = tv.tensor(rng.normal(size=(4, 3, 1, 6))), tv.tensor(rng.normal(size=(4, 4, 1, 6)))
    for _ in range(5):
        opt.zero_grad()
        loss = ((layer(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
    masked = layer.conv.weight.data[:, :, layer.mask == 0]
    assert masked.size == 4 * 3 * 3 and np.all(masked == 0)
    assert np.abs(layer.conv.weight.data[:, :, layer.mask == 1]).min() > 0


def _dependence(stack, size=5, channels=3):
    """d out[i, j] / d x[r, c] ≠ 0, for every output position (i, j): [size, size, size, size]."""
    stack = to_float64(stack)
    x = tv.tensor(np.random.default_rng(3).normal(size=(1, channels, size, size)), dtype=np.float64,
                  requires_grad=True)
    seen = np.zeros((size, size, size, size), bool)
    for i in range(size):
        for j in range(size):
            x.grad = None
            stack(x)[0, :, i, j].sum().backward()
            seen[i, j] = np.abs(x.grad[0]).sum(axis=0) > 0
    return seen


def test_outputs_never_see_the_current_or_a_later_position():
    seen = _dependence(Stack())
    for i in range(5):
        for j in range(5):
            later = np.zeros((5, 5), bool)
            later.flat[i * 5 + j:] = True                   # raster order: (i, j) and after
            assert not (seen[i, j] & later).any(), (i, j)


def test_no_blind_spot():
    """With four blocks of 3×3, the output at (2, 2) hears from all 12 positions before it,
    the upper right ones included (the original PixelCNN's blind spot)."""
    seen = _dependence(Stack())
    earlier = np.zeros((5, 5), bool)
    earlier.flat[:12] = True
    assert (seen[2, 2] == earlier).all()
    assert seen[2, 2][0, 4] and seen[2, 2][1, 4]             # above and to the right


def test_masks_need_a_centre():
    with pytest.raises(ValueError, match="odd sides"):
        nn.MaskedConv2d(1, 1, np.ones((2, 3)))
    with pytest.raises(ValueError, match="a one"):
        nn.MaskedConv2d(1, 1, np.zeros((3, 3)))
