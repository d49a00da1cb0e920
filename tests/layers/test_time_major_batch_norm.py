import pytest
import torch
from torch import nn

from hybrid_encoders.layers.time_major_batch_norm import TimeMajorBatchNorm1d


def _pair(channels):
    torch.manual_seed(0)
    ours, plain = TimeMajorBatchNorm1d(channels).double(), nn.BatchNorm1d(channels).double()
    nn.init.normal_(plain.weight)
    nn.init.normal_(plain.bias)
    ours.load_state_dict(plain.state_dict())
    return ours, plain


@pytest.mark.parametrize("time_major_gradient", [True, False])
@pytest.mark.parametrize("time_major", [True, False])
def test_equals_batch_norm_1d_in_training_and_eval(time_major, time_major_gradient):
    ours, plain = _pair(6)
    assert ours.state_dict().keys() == plain.state_dict().keys()
    sequence = 3 * torch.randn(2, 9, 6, dtype=torch.float64) + 1  # (B, T, C)
    x = sequence.transpose(1, 2) if time_major else sequence.transpose(1, 2).contiguous()  # (B, C, T)
    assert (x.stride(1) == 1) == time_major
    for _ in range(2):  # running statistics follow over steps
        a = x.clone().requires_grad_()
        b = x.clone().requires_grad_()
        out_ours, out_plain = ours(a), plain(b)
        torch.testing.assert_close(out_ours, out_plain, rtol=1e-12, atol=1e-12)
        # an incoming gradient in either layout (a channels-last kernel got one of them wrong: module docstring)
        weight = torch.randn(2, 9, 6, dtype=torch.float64).transpose(1, 2)
        weight = weight if time_major_gradient else weight.contiguous()
        grads_ours = torch.autograd.grad((out_ours * weight).sum(), [a, ours.weight, ours.bias])
        grads_plain = torch.autograd.grad((out_plain * weight).sum(), [b, plain.weight, plain.bias])
        for mine, theirs in zip(grads_ours, grads_plain):
            torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)
    for name, buffer in plain.named_buffers():
        torch.testing.assert_close(dict(ours.named_buffers())[name], buffer, rtol=1e-12, atol=0)
    ours.eval()
    plain.eval()
    torch.testing.assert_close(ours(x), plain(x), rtol=1e-12, atol=1e-12)


def test_two_dimensional_input_and_wrong_ranks():
    ours, plain = _pair(4)
    x = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(ours(x), plain(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="expected 2D or 3D input"):  # BatchNorm1d's own check
        ours(torch.randn(2, 4, 3, 2, dtype=torch.float64))
