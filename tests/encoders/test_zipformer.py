"""ZipformerEncoder: lengths, errors, gradients, determinism, bf16, training step counter, ESPnet init."""

import pytest
import torch

from hybrid_encoders.encoders.zipformer import ZipformerEncoder
from hybrid_encoders.regularization.scheduled_float import ScheduledFloat

TINY = {
    "num_encoder_layers": [1, 1, 2, 1, 1, 1],
    "encoder_dim": [32, 40, 48, 64, 48, 40],
    "encoder_unmasked_dim": [24, 24, 32, 32, 32, 24],
    "feedforward_dim": [48, 64, 80, 96, 80, 64],
    "num_heads": [2, 2, 2, 4, 2, 2],
    "query_head_dim": 8,
    "value_head_dim": 4,
    "pos_dim": 8,
    "cnn_module_kernel": [7, 7, 5, 5, 5, 7],
}


def tiny(**overrides) -> ZipformerEncoder:
    torch.manual_seed(0)
    return ZipformerEncoder(80, **{**TINY, **overrides})


def test_output_lengths_for_odd_and_even_inputs():
    encoder = tiny().eval()
    ilens = torch.tensor([101, 100, 99, 98, 31, 9])
    xs = torch.randn(len(ilens), 101, 80)
    with torch.no_grad():
        out, olens, states = encoder(xs, ilens)
    expected = ((ilens - 7) // 2 + 1) // 2
    assert olens.tolist() == expected.tolist() == [24, 23, 23, 23, 6, 1]
    assert out.shape == (6, int(expected.max()), 64) and states is None
    assert encoder.output_size() == 64
    # padding beyond the longest input is trimmed, so T' == max(olens) still holds
    with torch.no_grad():
        out2, olens2, _ = encoder(torch.randn(2, 120, 80), torch.tensor([99, 98]))
    assert out2.shape[1] == int(olens2.max()) == 23


def test_too_short_inputs_raise_espnet_error():
    encoder = tiny().eval()
    with torch.no_grad():
        encoder(torch.randn(1, 9, 80), torch.tensor([9]))
        with pytest.raises(Exception) as raised:
            encoder(torch.randn(2, 20, 80), torch.tensor([20, 8]))
    assert type(raised.value).__name__ == "TooShortUttError"


def test_bad_input_raises_value_error():
    encoder = tiny().eval()
    with pytest.raises(ValueError, match="input_size=80"):
        encoder(torch.randn(1, 50, 40), torch.tensor([50]))
    bad = torch.randn(1, 50, 80)
    bad[0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        encoder(bad, torch.tensor([50]))


def test_gradients_reach_every_parameter_in_training():
    encoder = tiny().train()
    encoder.batch_count.fill_(100000)  # past every warm-up schedule: few random skips left
    encoder._step_counter.forget()
    torch.manual_seed(3)
    out, olens, _ = encoder(torch.randn(4, 60, 80), torch.tensor([60, 55, 50, 47]))
    out.pow(2).mean().backward()
    missing = [name for name, p in encoder.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []


def test_eval_is_deterministic_and_training_machinery_is_forward_identity_at_rest():
    encoder = tiny()
    xs, ilens = torch.randn(2, 70, 80), torch.tensor([70, 63])
    encoder.eval()
    with torch.no_grad():
        first, _, _ = encoder(xs, ilens)
        second, _, _ = encoder(xs, ilens)
    assert torch.equal(first, second)
    # In training mode before any step, every schedule reads batch 0 (large skip rates) - but with all
    # regularisation schedules forced to 0 the training forward must equal the eval forward.
    encoder.train()
    for module in encoder.modules():
        if isinstance(module, ScheduledFloat):
            module.points = ((0.0, 0.0),)
    for stack in encoder.encoder.encoders:
        (stack if hasattr(stack, "encoder_pos") else stack.encoder).encoder_pos.dropout_rate = 0.0
    encoder.encoder.training = False  # feature masks are drawn at the stacks' level: disable them only
    with torch.no_grad():
        trained, _, _ = encoder(xs, ilens)
    torch.testing.assert_close(trained, first, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_gives_finite_outputs():
    encoder = tiny().eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, olens, _ = encoder(torch.randn(2, 80, 80), torch.tensor([80, 41]))
    assert torch.isfinite(out.float()).all()
    assert out.shape == (2, int(olens.max()), 64)


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"encoder_dim": [32, 40, 48, 64, 48]}, "encoder_dim"),
        ({"num_heads": [2, 2]}, "num_heads"),
        ({"encoder_unmasked_dim": [24, 24, 32, 80, 32, 24]}, "encoder_unmasked_dim"),
        ({"cnn_module_kernel": 6}, "cnn_module_kernel"),
        ({"pos_dim": 7}, "pos_dim"),
        ({"query_head_dim": 0}, "query_head_dim"),
        ({"dropout_schedule": [[10, 0.1], [5, 0.2]]}, "dropout_schedule"),
        ({"attention_heads": 4}, "attention_heads"),
    ],
)
def test_configuration_errors_name_the_key(overrides, key):
    with pytest.raises(ValueError, match=key):
        ZipformerEncoder(80, **{**TINY, **overrides})


def test_unknown_preset_and_per_stack_broadcast():
    with pytest.raises(ValueError, match="preset"):
        ZipformerEncoder(80, preset="xl")
    config = ZipformerEncoder.build_config(None, **{**TINY, "num_encoder_layers": 1})
    assert config["num_encoder_layers"] == [1] * 6 and config["query_head_dim"] == [8] * 6


def test_batch_count_counts_optimizer_steps_under_gradient_accumulation():
    encoder = tiny(schedule_batch_scale=2.5).train()
    optimizer = torch.optim.SGD(encoder.parameters(), lr=1e-3)
    xs, ilens = torch.randn(2, 40, 80), torch.tensor([40, 35])
    counts = []
    for forward_index in range(9):  # accum_grad = 3
        out, _, _ = encoder(xs, ilens)
        out.sum().backward()
        counts.append(int(encoder.batch_count))
        if forward_index % 3 == 2:
            optimizer.step()
            optimizer.zero_grad()
    assert counts == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    schedule = encoder.encoder.encoders[0].layers[0].conv_skip_rate
    assert schedule.batch_count == 2 * 2.5
    with torch.no_grad():
        encoder.eval()(xs, ilens)  # evaluation forwards never count
    assert int(encoder.batch_count) == 2
    assert "batch_count" in encoder.state_dict()


def test_espnet_initialization_restores_icefall_init():
    from espnet2.torch_utils.initialize import initialize

    encoder = tiny()
    initialize(encoder, "xavier_uniform")
    stack = encoder.encoder.encoders[2].encoder
    for name, value in stack.layers[0].state_dict().items():
        assert torch.equal(value, stack.layers[1].state_dict()[name]), name  # identical copies, as icefall
    layer = stack.layers[0]
    assert bool((layer.bypass.bypass_scale == 0.5).all()) and layer.norm.log_scale.item() == 1.0
    assert bool((encoder.encoder.encoders[1].downsample.bias == 0).all())
    bound = (1 / layer.self_attn1.out_proj.in_features) ** 0.5
    assert float(layer.self_attn1.out_proj.weight.detach().abs().max()) <= 0.05 * bound
    assert float(encoder.encoder_embed.convnext.pointwise_conv2.weight.detach().abs().max()) <= 0.01 * (1 / 384) ** 0.5


def test_unpadded_batch_skips_masking_with_identical_results():
    encoder = tiny().eval()
    xs, ilens = torch.randn(2, 60, 80), torch.tensor([60, 60])
    with torch.no_grad():
        out, olens, _ = encoder(xs, ilens)  # no padding: the stacks get key_padding_mask=None
        embedded, lengths = encoder.encoder_embed(xs, ilens)
        all_valid = torch.zeros(2, embedded.size(1), dtype=torch.bool)
        masked, _ = encoder.encoder(embedded, lengths, all_valid)
    torch.testing.assert_close(out, masked, rtol=0, atol=1e-6)
