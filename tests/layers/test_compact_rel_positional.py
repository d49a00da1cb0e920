import math

import torch

from hybrid_encoders.layers.compact_rel_positional import CompactRelPositionalEncoding


def test_encoding_matches_formula_per_offset():
    dim, frames = 8, 5
    encoding = CompactRelPositionalEncoding(dim).eval()(frames)
    assert encoding.shape == (2 * frames - 1, dim)
    compression = math.sqrt(dim)
    for row in range(2 * frames - 1):
        offset = row - (frames - 1)
        sign = (offset > 0) - (offset < 0)
        compressed = compression * sign * (math.log(abs(offset) + compression) - math.log(compression))
        theta = math.atan(compressed / (dim / (2 * math.pi)))
        expected = []
        for k in range(dim // 2):
            expected += [math.cos((k + 1) * theta), math.sin((k + 1) * theta)]
        expected[-1] = 1.0
        torch.testing.assert_close(encoding[row], torch.tensor(expected), rtol=0, atol=2e-6)


def test_encoding_depends_only_on_offset():
    module = CompactRelPositionalEncoding(48).eval()
    short, long = module(10), module(30)
    torch.testing.assert_close(short, long[20:39])
