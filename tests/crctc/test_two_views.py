"""The two CR-CTC views: independent masks per view, one time warp shared by both, lengths duplicated."""

import torch
from espnet2.asr.specaug.specaug import SpecAug

from hybrid_encoders.crctc.views import two_views
from hybrid_encoders.specaug.adaptive import AdaptiveSpecAug

LENGTHS = torch.tensor([50, 40, 30])


def features():
    feats = torch.rand(3, 50, 20, generator=torch.Generator().manual_seed(0)) + 0.5  # no exact zeros
    feats[1, 40:] = 0.0
    feats[2, 30:] = 0.0
    return feats


def espnet_specaug(apply_time_warp=True):
    return SpecAug(
        apply_time_warp=apply_time_warp, time_warp_window=5, freq_mask_width_range=(0, 5), num_freq_mask=2,
        time_mask_width_ratio_range=(0.0, 0.1), num_time_mask=3,
    )


def assert_masks_differ_per_utterance(first, second):
    for utterance in range(3):
        assert not torch.equal(first[utterance] == 0, second[utterance] == 0), utterance


def test_espnet_specaug_views_share_the_warp_and_differ_in_the_masks():
    torch.manual_seed(3)
    views, lengths = two_views(espnet_specaug(), features(), LENGTHS)
    assert views.shape == (6, 50, 20)
    assert torch.equal(lengths, torch.cat([LENGTHS, LENGTHS]))
    first, second = views[:3], views[3:]
    assert_masks_differ_per_utterance(first, second)
    # Where neither view is masked, both hold the same warped features...
    unmasked = (first != 0) & (second != 0)
    assert unmasked.float().mean() > 0.3  # of all entries, padding included
    assert torch.equal(first[unmasked], second[unmasked])
    # ... which are warped: not the input features.
    assert not torch.equal(first[unmasked], features()[unmasked])


def test_specaug_applied_to_the_stacked_batch_would_warp_each_view_differently():
    """The property checked above fails for the plain approach (the test can fail)."""
    torch.manual_seed(3)
    views, _ = espnet_specaug()(torch.cat([features(), features()]), torch.cat([LENGTHS, LENGTHS]))
    first, second = views[:3], views[3:]
    unmasked = (first != 0) & (second != 0)
    assert not torch.equal(first[unmasked], second[unmasked])


def test_without_time_warp_unmasked_features_are_the_input():
    torch.manual_seed(4)
    views, _ = two_views(espnet_specaug(apply_time_warp=False), features(), LENGTHS)
    assert_masks_differ_per_utterance(views[:3], views[3:])
    for view in (views[:3], views[3:]):
        kept = view != 0
        assert torch.equal(view[kept], features()[kept])


def test_other_specaugs_draw_independently_for_each_view():
    torch.manual_seed(5)
    specaug = AdaptiveSpecAug(num_freq_masks=2, freq_mask_width=5, num_time_masks=3, time_mask_width_ratio=0.1)
    views, lengths = two_views(specaug, features(), LENGTHS)
    assert views.shape == (6, 50, 20)
    assert torch.equal(lengths, torch.cat([LENGTHS, LENGTHS]))
    assert_masks_differ_per_utterance(views[:3], views[3:])
    for view in (views[:3], views[3:]):
        kept = view != 0
        assert torch.equal(view[kept], features()[kept])
