import pytest
import torch
from torch import nn

from hybrid_encoders.layers.reparam_conv import ReparamDepthwiseConv

from conftest import randomise_batch_norms

ALL_KERNEL_KINDS = [0, 2, 3, 4, 5, 6, 30, 31]  # identity, even, odd, a full-size odd and a near-full even kernel


def _randomise(module):
    """Random architecture logits and non-trivial BatchNorm statistics (eval-mode folding must use all four)."""
    randomise_batch_norms(module)
    for name, parameter in module.named_parameters():
        if name == "arch_logits":
            nn.init.normal_(parameter, std=1.0)
    return module.eval()


def _naive_branch(x, weight, norm, kernel_size):
    """Branch output from the definition: taps at offsets -k//2 .. (k-1)//2, zero outside, then eval BatchNorm."""
    channels, length = x.shape[1], x.shape[2]
    y = torch.zeros_like(x)
    offsets = [0] if kernel_size == 0 else range(-(kernel_size // 2), (kernel_size - 1) // 2 + 1)
    for i, offset in enumerate(offsets):
        tap = torch.ones(channels) if kernel_size == 0 else weight[:, 0, i]
        for t in range(length):
            if 0 <= t + offset < length:
                y[:, :, t] += tap * x[:, :, t + offset]
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return (y - norm.running_mean[:, None]) * scale[:, None] + norm.bias[:, None]


@torch.no_grad()
def test_train_mode_forward_matches_definition():
    torch.manual_seed(0)
    conv = _randomise(ReparamDepthwiseConv(3, 7, "train", rep_list=[0, 2, 3, 4], rep_alphas=[0.4, 0.3, 0.2, 0.1]))
    x = torch.randn(2, 3, 11)
    expected = _naive_branch(x, conv.main.conv.weight, conv.main.norm, 7)
    for alpha, k in zip([0.4, 0.3, 0.2, 0.1], [0, 2, 3, 4]):
        branch = conv.branches[f"kernel{k}"]
        expected += alpha * _naive_branch(x, None if k == 0 else branch.conv.weight, branch.norm, k)
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=0)


@torch.no_grad()
def test_even_kernel_reaches_one_more_tap_to_the_left():
    conv = ReparamDepthwiseConv(1, 31, "train", rep_list=[4]).eval()
    branch = conv.branches["kernel4"]
    branch.conv.weight.fill_(1.0)
    x = torch.zeros(1, 1, 20)
    x[0, 0, 10] = 1.0
    hits = torch.nonzero(branch(x)[0, 0]).flatten()  # BatchNorm is the identity at initialisation
    assert hits.tolist() == [9, 10, 11, 12]  # output t sees inputs t-2 .. t+1, so the delta at 10 reaches t = 9..12
    weight, _ = branch.folded(31)
    assert torch.nonzero(weight[0, 0]).flatten().tolist() == [13, 14, 15, 16]  # offsets -2..+1 around centre 15


@pytest.mark.parametrize(
    "mode, kwargs",
    [
        ("train", {"rep_list": ALL_KERNEL_KINDS, "rep_alphas": [0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05, 0.05]}),
        ("train", {"rep_list": [3, 4, 5, 2, 6]}),  # no alphas: every branch at scale 1
        ("train", {"rep_list": []}),  # main branch only
        ("search", {"candidates": ALL_KERNEL_KINDS}),
    ],
)
@torch.no_grad()
def test_deploy_equals_multi_branch(mode, kwargs):
    torch.manual_seed(1)
    conv = _randomise(ReparamDepthwiseConv(16, 31, mode, **kwargs))
    x = torch.randn(2, 16, 57)
    expected = conv(x)
    conv.reparameterize()
    assert conv.mode == "deploy"
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=0)
    convs = [m for m in conv.modules() if isinstance(m, nn.Conv1d)]
    assert len(convs) == 1 and convs[0].bias is not None and convs[0].groups == 16
    assert not any(isinstance(m, nn.BatchNorm1d) for m in conv.modules())
    assert sum(p.numel() for p in conv.parameters()) == 16 * 31 + 16
    conv.reparameterize()  # idempotent
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=0)


@torch.no_grad()
def test_deployed_state_dict_loads_into_deploy_mode_module():
    conv = _randomise(ReparamDepthwiseConv(4, 5, "train", rep_list=[2, 3]))
    conv.reparameterize()
    fresh = ReparamDepthwiseConv(4, 5, "deploy")
    fresh.load_state_dict(conv.state_dict(), strict=True)
    x = torch.randn(1, 4, 9)
    torch.testing.assert_close(fresh(x), conv(x))


def test_search_mode_weights_and_gradients():
    torch.manual_seed(2)
    conv = ReparamDepthwiseConv(8, 31, "search", candidates=[0, 2, 3, 4, 5, 6])
    weights = conv.branch_weights()
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert (weights - 1 / 6).abs().max().item() < 1e-3  # DARTS starts near uniform
    assert conv.arch_parameters() == [conv.arch_logits]
    assert conv.arch_logits not in set(p for name, p in conv.named_parameters() if name != "arch_logits")
    conv(torch.randn(2, 8, 40)).pow(2).sum().backward()
    assert conv.arch_logits.grad is not None and conv.arch_logits.grad.abs().min() > 0
    assert ReparamDepthwiseConv(8, 31, "train", rep_list=[3]).arch_parameters() == []


@pytest.mark.parametrize("top_k", [None, 2])
@torch.no_grad()
def test_export_round_trips_into_train_mode(top_k):
    torch.manual_seed(3)
    search = _randomise(ReparamDepthwiseConv(8, 31, "search", candidates=[0, 2, 3, 5]))
    exported = search.export(top_k=top_k)
    weights = dict(zip([0, 2, 3, 5], search.branch_weights().tolist()))
    ranked = sorted(weights, key=weights.get, reverse=True)[:top_k]
    assert exported["rep_list"] == ranked
    assert exported["rep_alphas"] == pytest.approx([weights[k] for k in ranked])
    train = ReparamDepthwiseConv(8, 31, "train", **exported).eval()
    missing, unexpected = train.load_state_dict(search.state_dict(), strict=False)
    assert missing == [] and unexpected == ["arch_logits"] + [
        key for key in search.state_dict() if key.startswith("branches.") and int(key.split(".")[1][6:]) not in ranked
    ]
    x = torch.randn(2, 8, 33)
    expected = search.main(x) + sum(weights[k] * search.branches[f"kernel{k}"](x) for k in ranked)
    torch.testing.assert_close(train(x), expected, atol=1e-6, rtol=0)


def test_export_needs_search_mode():
    with pytest.raises(RuntimeError, match="search"):
        ReparamDepthwiseConv(4, 31, "train", rep_list=[3]).export()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernel_size": 30}, "kernel_size"),
        ({"mode": "fixed"}, "mode"),
        ({"rep_list": [3, 33]}, "rep_list"),
        ({"rep_list": [3, 3]}, "repeated"),
        ({"rep_list": [3, 5], "rep_alphas": [1.0]}, "rep_alphas"),
        ({"mode": "search", "candidates": [-1]}, "candidates"),
        ({"mode": "search", "candidates": []}, "candidates"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReparamDepthwiseConv(4, **kwargs)
