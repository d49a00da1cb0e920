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


def test_left_context_extends_the_negative_offsets_and_eval_reuses_recent_results():
    module = CompactRelPositionalEncoding(8).eval()
    with_left = module(4, left_context=6)
    assert with_left.shape == (6 + 2 * 4 - 1, 8)
    torch.testing.assert_close(with_left, module(10)[:13])  # offsets -9 .. 3 of the square encoding of 10 frames
    assert module(4, left_context=6) is with_left
    for frames in range(5, 5 + CompactRelPositionalEncoding.RECENT):
        module(frames)
    assert module(4, left_context=6) is not with_left  # only the last few are kept
    module.train()
    assert module(4, left_context=6) is not module(4, left_context=6)
