import math

import pytest
import torch

from hybrid_encoders.layers.rel_positional import RelPositionalEncoding


def test_positional_table_rows_and_extension():
    encoding = RelPositionalEncoding(8, max_len=4)
    for length in (1, 3, 4, 9):  # 9 extends the table
        pe = encoding(length)
        assert pe.shape == (1, 2 * length - 1, 8)
        for row, distance in enumerate(range(length - 1, -length, -1)):
            for i in range(4):
                angle = distance / 10000 ** (2 * i / 8)
                assert pe[0, row, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
                assert pe[0, row, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_positional_table_equals_espnet():
    embedding = pytest.importorskip("espnet.nets.pytorch_backend.transformer.embedding")
    espnet_encoding = embedding.RelPositionalEncoding(64, 0.0)
    _, espnet_pe = espnet_encoding(torch.zeros(1, 37, 64))
    torch.testing.assert_close(RelPositionalEncoding(64)(37), espnet_pe, atol=1e-6, rtol=0)
