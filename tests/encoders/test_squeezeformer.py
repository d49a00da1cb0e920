import math

import pytest
import torch
from torch import nn

from hybrid_encoders.encoders.squeezeformer import SqueezeformerEncoder
from hybrid_encoders.layers.rel_attention import RelPositionMultiHeadedAttention

TINY = {"output_size": 16, "attention_heads": 2, "num_blocks": 4, "linear_units": 24, "cnn_module_kernel": 7}


def _encoder(**overrides):
    torch.manual_seed(0)
    encoder = SqueezeformerEncoder(80, **{**TINY, **overrides})
    for module in encoder.modules():  # non-trivial normalisation statistics and affine parameters
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2.0)
        if isinstance(module, (nn.BatchNorm1d, nn.LayerNorm)):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    for name, param in encoder.named_parameters():
        if name.endswith(("scale.scale", "scale.bias", "pos_bias_u", "pos_bias_v")):
            nn.init.uniform_(param, 0.5, 1.5)
    return encoder


def _expected_olens(lengths):
    return [math.ceil(math.ceil(n / 2) / 2) for n in lengths]


def test_output_lengths_for_every_length_alone_and_batched():
    encoder = _encoder().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # Every length 1..300 inside batches (each batch padded beyond its longest item) ...
        for start in range(1, 301, 50):
            lengths = torch.arange(start, start + 50).flip(0)[torch.randperm(50, generator=generator)]
            ys, olens, states = encoder(torch.randn(50, start + 55, 80, generator=generator), lengths)
            assert olens.tolist() == _expected_olens(lengths.tolist()) and states is None
            assert ys.shape == (50, int(olens.max()), 16)
        # ... and alone, where T' == olens, for the short ones (odd and even) and a few long ones.
        for length in [*range(1, 41), 127, 128, 255, 256, 299, 300]:
            ys, olens, _ = encoder(torch.randn(1, length, 80, generator=generator), torch.tensor([length]))
            assert olens.tolist() == _expected_olens([length])
            assert ys.shape == (1, olens[0], 16)


@pytest.mark.parametrize("overrides", [{}, {"conv_glu": True}, {"temporal_unet": False}])
def test_padding_invariance(overrides):
    encoder = _encoder(**overrides).eval()
    lengths = [157, 91, 33, 30]
    generator = torch.Generator().manual_seed(1)
    alone = [torch.randn(1, n, 80, generator=generator) for n in lengths]
    batch = torch.randn(len(lengths), max(lengths) + 5, 80, generator=generator) * 10
    for b, x in enumerate(alone):
        batch[b, : lengths[b]] = x[0]
    with torch.no_grad():
        ys, olens, _ = encoder(batch, torch.tensor(lengths))
        for b, x in enumerate(alone):
            single, single_lens, _ = encoder(x, torch.tensor([lengths[b]]))
            assert olens[b] == single_lens[0]
            torch.testing.assert_close(ys[b, : olens[b]], single[0], atol=1e-5, rtol=0)


def test_every_parameter_gets_a_gradient_in_training():
    encoder = _encoder().train()
    ys, olens, _ = encoder(torch.randn(2, 70, 80), torch.tensor([70, 41]))
    ys.pow(2).mean().backward()
    missing = [name for name, p in encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_eval_is_deterministic_and_training_uses_dropout():
    encoder = _encoder(dropout_rate=0.3).eval()
    x, lengths = torch.randn(2, 50, 80), torch.tensor([50, 37])
    with torch.no_grad():
        first, _, _ = encoder(x, lengths)
        second, _, _ = encoder(x, lengths)
        assert torch.equal(first, second)
        encoder.train()
        assert not torch.allclose(encoder(x, lengths)[0], first)


def test_finite_in_fp32_and_bf16_autocast():
    encoder = _encoder().eval()
    x, lengths = torch.randn(2, 90, 80), torch.tensor([90, 57])
    with torch.no_grad():
        fp32, _, _ = encoder(x, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, _, _ = encoder(x, lengths)
    assert torch.isfinite(fp32).all() and torch.isfinite(bf16).all()
    assert (bf16.float() - fp32).abs().mean() < 0.1  # same function, bf16 rounding only


def test_intermediate_ctc_outputs_and_conditioning():
    encoder = _encoder(interctc_layer_idx=[1], interctc_use_conditioning=True).eval()  # reduce 1, recover 3
    encoder.conditioning_layer = nn.Linear(5, 16)  # what ESPnetASRModel creates

    class FakeCTC(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(16, 5)

        def softmax(self, h):
            return torch.softmax(self.proj(h), dim=-1)

    x, lengths = torch.randn(2, 40, 80), torch.tensor([40, 23])
    with torch.no_grad():
        (ys, intermediate), olens, _ = encoder(x, lengths, ctc=FakeCTC())
    assert [layer for layer, _ in intermediate] == [1]
    assert intermediate[0][1].shape == ys.shape
    with pytest.raises(ValueError, match="ctc"):
        encoder(x, lengths)


def test_interctc_layer_at_full_rate_after_recovery():
    encoder = _encoder(num_blocks=6, time_recover_idx=4, interctc_layer_idx=[2, 5]).eval()  # reduce 2
    (ys, intermediate), _, _ = encoder(torch.randn(1, 30, 80), torch.tensor([30]))
    assert [(layer, h.shape) for layer, h in intermediate] == [(2, ys.shape), (5, ys.shape)]
    with pytest.raises(ValueError, match="interctc_layer_idx=4"):  # output of block 3, inside the reduced stretch
        _encoder(num_blocks=6, time_recover_idx=4, interctc_layer_idx=[4])


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"output_size": 18, "attention_heads": 4}, "output_size"),
        ({"time_reduce_idx": 3, "time_recover_idx": 2}, "time_reduce_idx"),
        ({"time_recover_idx": 4}, "time_recover_idx"),
        ({"cnn_module_kernel": 8}, "cnn_module_kernel"),
        ({"dropout_rate": 1.5}, "dropout_rate"),
        ({"interctc_layer_idx": [4]}, "interctc_layer_idx"),
        ({"num_blocks": 0}, "num_blocks"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_configuration_errors_name_the_key(overrides, key):
    with pytest.raises(ValueError, match=key):
        SqueezeformerEncoder(80, **{**TINY, **overrides})


def test_unknown_preset_and_bad_input():
    with pytest.raises(ValueError, match="preset"):
        SqueezeformerEncoder(80, preset="xxl")
    encoder = _encoder().eval()
    with pytest.raises(ValueError, match="input_size=80"):
        encoder(torch.randn(1, 20, 40), torch.tensor([20]))
    nan = torch.randn(1, 20, 80)
    nan[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        encoder(nan, torch.tensor([20]))


def test_too_short_input_raises_espnet_error():
    from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError

    encoder = _encoder().eval()
    assert encoder.embed.min_input_length == 1
    with pytest.raises(TooShortUttError):
        encoder(torch.randn(2, 10, 80), torch.tensor([10, 0]))


def test_espnet_initialize_restores_paper_initialisation():
    from espnet2.torch_utils.initialize import initialize

    encoder = SqueezeformerEncoder(80, **TINY)
    model = nn.ModuleDict({"encoder": encoder})
    initialize(model, "xavier_uniform")
    block = encoder.encoders[0]
    assert torch.equal(block.self_attn.pos_bias_u, torch.zeros_like(block.self_attn.pos_bias_u))
    assert torch.equal(block.conv_scale.scale, torch.ones(16))
    assert block.self_attn.linear_q.bias.abs().max() > 0  # generic init zeroed it; paper init draws it
    assert block.feed_forward1.w_2.weight.abs().max() <= 24**-0.5
    assert encoder.embed.conv1.weight.abs().max() <= 1 / 3


def test_subclass_hooks_and_config_extension():
    built = []

    class Variant(SqueezeformerEncoder):
        NAME = "variant"
        DEFAULTS = {**SqueezeformerEncoder.DEFAULTS, "branch_count": 2}

        @classmethod
        def _validate_config(cls, config):
            super()._validate_config(config)
            if config["branch_count"] < 1:
                raise ValueError("variant: branch_count must be >= 1")

        def _build_attention(self, block_index, config):
            built.append(("attention", block_index))
            return RelPositionMultiHeadedAttention(config["attention_heads"], config["output_size"])

        def _build_depthwise(self, block_index, channels, kernel_size, config):
            built.append(("depthwise", block_index, channels, kernel_size, config["branch_count"]))
            return nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)

    encoder = Variant(80, **TINY, branch_count=3)
    assert ("depthwise", 2, 32, 7, 3) in built and ("attention", 3) in built
    assert encoder(torch.randn(1, 20, 80), torch.tensor([20]))[0].shape == (1, 5, 16)
    with pytest.raises(ValueError, match="branch_count"):
        Variant(80, **TINY, branch_count=0)
    with pytest.raises(ValueError, match="branch_count"):
        SqueezeformerEncoder(80, **TINY, branch_count=3)
