import torch

from hybrid_encoders.regularization.skipping import SharedDropout, feature_masks, sequence_dropout


def test_feature_masks_zero_upper_channel_bands_consistently():
    torch.manual_seed(0)
    masks = feature_masks(400, [8, 12], [4, 6], 0.125, torch.device("cpu"), torch.float32)
    assert [tuple(m.shape) for m in masks] == [(400, 1, 8), (400, 1, 12)]
    first, second = masks
    assert bool((first[:, :, :4] == 1).all()) and bool((second[:, :, :6] == 1).all())
    band1, band2 = first[:, 0, 4], first[:, 0, 6]
    assert torch.equal(band1, second[:, 0, 6]) and torch.equal(band2, second[:, 0, 9])  # same draws per stack
    assert bool((band2 <= band1).all())  # mask2 implies mask1
    assert 0.05 < 1 - float(band1.mean()) < 0.2 and 0.15 < 1 - float(band2.mean()) < 0.32


def test_sequence_dropout_and_shared_dropout():
    torch.manual_seed(0)
    x = torch.ones(200, 3, 4)
    assert sequence_dropout(x, 0.5, training=False) is x
    y = sequence_dropout(x, 0.5, training=True)
    per_sequence = y.flatten(1)
    assert bool(((per_sequence == 0).all(1) | (per_sequence == 1).all(1)).all())
    dropout = SharedDropout(0.5, shared_dim=1).train()
    z = dropout(x)
    assert torch.equal(z, z[:, :1].expand_as(z)) and set(z.unique().tolist()) == {0.0, 2.0}
    assert dropout.eval()(x) is x
