import torch

from hybrid_encoders.layers.time_reduction import TimeReduction, TimeRecovery, reduced_lengths


def _mask(lengths, frames):
    return (torch.arange(frames)[None, :] < torch.tensor(lengths)[:, None]).unsqueeze(1)


def test_time_reduction_lengths_and_padding_invariance():
    torch.manual_seed(0)
    reduction = TimeReduction(6)
    assert reduced_lengths(torch.tensor([1, 2, 3, 4, 9])).tolist() == [1, 1, 2, 2, 5]
    for frames in (1, 2, 5, 8, 11):
        assert reduction(torch.randn(1, frames, 6), _mask([frames], frames)).shape == (1, (frames + 1) // 2, 6)
    x = torch.randn(1, 9, 6)
    padded = torch.cat([x, torch.full((1, 6, 6), 50.0)], dim=1)
    with torch.no_grad():
        alone = reduction(x, _mask([9], 9))
        batched = reduction(padded, _mask([9], 15))
    torch.testing.assert_close(batched[:, :5], alone, atol=1e-5, rtol=0)


def test_time_recovery_repeats_projects_and_adds_skip():
    recovery = TimeRecovery(3)
    reduced = torch.randn(1, 3, 3)
    skip = torch.randn(1, 5, 3)
    expected = skip + torch.stack([reduced[0, t // 2] for t in range(5)]) @ recovery.linear.weight.T
    expected = expected + recovery.linear.bias
    torch.testing.assert_close(recovery(reduced, skip), expected)
