import pytest
import torch

from hybrid_encoders.specaug.adaptive import AdaptiveSpecAug


def _runs(row):
    """(start, width) of the True runs of a 1-D bool tensor."""
    runs, start = [], None
    for index, value in enumerate(row.tolist() + [False]):
        if value and start is None:
            start = index
        if not value and start is not None:
            runs.append((start, index - start))
            start = None
    return runs


def test_masks_stay_inside_each_utterance_with_length_relative_widths():
    torch.manual_seed(0)
    augment = AdaptiveSpecAug(num_time_masks=5, time_mask_width_ratio=0.05)
    lengths = torch.tensor([2000, 400, 120] * 50)
    time_mask, freq_mask = augment.masks(lengths, 2000, 80)
    for b, length in enumerate(lengths.tolist()):
        assert not time_mask[b, length:].any()  # never in the padding
        runs = _runs(time_mask[b])
        assert len(runs) <= 5
        assert all(width <= 5 * 0.05 * length for _, width in runs)  # at most 5 overlapping masks of < 5 %
        assert all(width <= 2 * 26 for _, width in _runs(freq_mask[b]))
    masked_fraction = time_mask.float().sum(1) / lengths
    for length in (2000, 400):  # the masked fraction does not depend on the length (E ~ 5 x 2.5 %)
        assert 0.07 < masked_fraction[lengths == length].mean() < 0.15


def test_forward_zeroes_exactly_the_drawn_masks():
    augment = AdaptiveSpecAug()
    x = torch.randn(3, 300, 80) + 10
    lengths = torch.tensor([300, 200, 50])
    torch.manual_seed(3)
    time_mask, freq_mask = augment.masks(lengths, 300, 80)
    torch.manual_seed(3)
    y, y_lengths = augment(x, lengths)
    zeroed = time_mask[:, :, None] | freq_mask[:, None, :]
    assert torch.equal(y == 0, zeroed) and torch.equal(y[~zeroed], x[~zeroed])
    assert y_lengths is lengths


def test_adaptive_mask_count():
    torch.manual_seed(0)
    augment = AdaptiveSpecAug(num_time_masks=10, time_mask_width_ratio=0.2, time_mask_count_ratio=0.01)
    time_mask, _ = augment.masks(torch.tensor([150] * 200 + [3000] * 200), 3000, 80)
    assert max(len(_runs(row)) for row in time_mask[:200]) <= 1  # floor(150 x 0.01) = 1 mask
    assert max(len(_runs(row)) for row in time_mask[200:]) > 1


@pytest.mark.parametrize(
    "settings, key",
    [({"num_time_masks": -1}, "num_time_masks"), ({"time_mask_width_ratio": 1.5}, "time_mask_width_ratio"),
     ({"time_mask_count_ratio": 0.0}, "time_mask_count_ratio"), ({"freq_mask_width": 2.5}, "freq_mask_width")],
)
def test_invalid_settings_name_the_key(settings, key):
    with pytest.raises(ValueError, match=key):
        AdaptiveSpecAug(**settings)
