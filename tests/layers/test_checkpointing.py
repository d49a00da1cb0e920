"""Activation checkpointing: the same loss, gradients, random draws and step count as the plain run, less memory."""

import random

import pytest
import torch

from hybrid_encoders.encoders.squeezeformer import SqueezeformerEncoder
from hybrid_encoders.encoders.zipformer import ZipformerEncoder
from hybrid_encoders.layers.checkpointing import checkpointed

ZIPFORMER_TINY = {
    "num_encoder_layers": [1, 2, 1],
    "downsampling_factor": [1, 2, 4],
    "encoder_dim": [32, 40, 48],
    "encoder_unmasked_dim": [24, 24, 32],
    "feedforward_dim": [48, 64, 80],
    "num_heads": 2,
    "query_head_dim": 8,
    "value_head_dim": 4,
    "pos_dim": 8,
    "cnn_module_kernel": [7, 5, 5],
}
SQUEEZEFORMER_TINY = {"output_size": 32, "attention_heads": 2, "num_blocks": 4, "dropout_rate": 0.3}


def training_step(encoder, seed: int, xs, ilens):
    """One forward + backward from a fixed random state; returns loss, gradients, the next draws of both RNGs."""
    encoder.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    random.seed(seed)
    out, olens, _ = encoder(xs, ilens)
    loss = out.square().mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None}
    return loss.detach(), grads, random.random(), torch.rand(())


def build_pair(cls, config, **checkpointing):
    torch.manual_seed(0)
    plain = cls(80, **config).train()
    checkpointed_encoder = cls(80, **config, **checkpointing).train()
    checkpointed_encoder.load_state_dict(plain.state_dict())
    return plain, checkpointed_encoder


def assert_same_step(plain, lean, seeds, xs, ilens):
    for seed in seeds:
        loss, grads, next_random, next_torch = training_step(plain, seed, xs, ilens)
        loss_c, grads_c, next_random_c, next_torch_c = training_step(lean, seed, xs, ilens)
        torch.testing.assert_close(loss_c, loss, rtol=1e-6, atol=0)
        assert grads_c.keys() == grads.keys()
        for name in grads:
            torch.testing.assert_close(grads_c[name], grads[name], rtol=1e-5, atol=1e-7, msg=name)
        # the recomputation replayed its draws and gave back both generators as it found them
        assert next_random_c == next_random and torch.equal(next_torch_c, next_torch)


@pytest.mark.parametrize("batch_count", [0, 3000])
def test_zipformer_checkpointing_gives_the_plain_loss_and_gradients_with_random_skips_active(batch_count):
    plain, lean = build_pair(ZipformerEncoder, ZIPFORMER_TINY, activation_checkpointing=[True, False, True])
    assert [stack.activation_checkpointing for stack in _stacks(lean)] == [True, False, True]
    for encoder in (plain, lean):
        encoder.load_state_dict({"batch_count": torch.tensor(batch_count)}, strict=False)
    xs, ilens = torch.randn(3, 60, 80), torch.tensor([60, 47, 30])
    # at batch 0 the layer, module and positional skips and the balancers draw at their highest rates; over several
    # seeds every kind of draw both fires and does not
    assert_same_step(plain, lean, range(4), xs, ilens)
    assert int(plain.batch_count) == int(lean.batch_count) == batch_count


def test_zipformer_checkpointing_counts_each_optimizer_step_once():
    plain, lean = build_pair(ZipformerEncoder, ZIPFORMER_TINY, activation_checkpointing=True)
    xs, ilens = torch.randn(2, 40, 80), torch.tensor([40, 40])
    for encoder in (plain, lean):
        optimizer = torch.optim.SGD(encoder.parameters(), lr=1e-3)
        for step in range(3):
            training_step(encoder, step, xs, ilens)
            optimizer.step()
        training_step(encoder, 3, xs, ilens)  # observes the third step
    assert int(plain.batch_count) == int(lean.batch_count) == 3


def test_squeezeformer_checkpointing_gives_the_plain_loss_and_gradients_with_dropout():
    plain, lean = build_pair(SqueezeformerEncoder, SQUEEZEFORMER_TINY, activation_checkpointing=True)
    xs, ilens = torch.randn(2, 60, 80), torch.tensor([60, 41])
    assert_same_step(plain, lean, range(3), xs, ilens)


def saved_bytes(function) -> int:
    """Bytes of the distinct non-parameter storages autograd saves during ``function()``."""
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function()
    return sum(storages.values())


@pytest.mark.parametrize(
    "cls, config, embed",
    [(ZipformerEncoder, ZIPFORMER_TINY, "encoder_embed"), (SqueezeformerEncoder, SQUEEZEFORMER_TINY, "embed")],
)
def test_checkpointing_keeps_little_of_the_blocks_for_the_backward_pass(cls, config, embed):
    plain, lean = build_pair(cls, config, activation_checkpointing=True)
    xs, ilens = torch.randn(2, 200, 80), torch.tensor([200, 200])
    embed_bytes = saved_bytes(lambda: getattr(plain, embed)(xs, ilens))  # the front end is not checkpointed
    kept = {}
    for name, encoder in (("plain", plain), ("checkpointed", lean)):
        torch.manual_seed(0)
        random.seed(0)
        kept[name] = saved_bytes(lambda: encoder(xs, ilens)[0].sum()) - embed_bytes
    assert 0 < kept["checkpointed"] < 0.2 * kept["plain"]


def test_zipformer_embed_recomputation_gives_the_plain_step_and_keeps_its_two_segment_inputs():
    torch.manual_seed(0)
    plain = ZipformerEncoder(80, **ZIPFORMER_TINY, recompute_embed=False).train()
    lean = ZipformerEncoder(80, **ZIPFORMER_TINY).train()  # the default recomputes
    lean.load_state_dict(plain.state_dict())
    assert lean.encoder_embed.recompute and not plain.encoder_embed.recompute
    xs, ilens = torch.randn(2, 120, 80), torch.tensor([120, 97])
    # the embed's balancers, whitening, ConvNeXt layer drop and output dropout all draw at batch 0
    assert_same_step(plain, lean, range(4), xs, ilens)
    kept = {}
    for name, encoder in (("plain", plain), ("recomputed", lean)):
        torch.manual_seed(0)
        random.seed(0)
        kept[name] = saved_bytes(lambda: encoder.encoder_embed(xs, ilens)[0].sum())
    # the features and the convolutions' output (the second segment's input): 1.2 of the plain run's 11 MB here
    images = lean.encoder_embed.convolve(xs)
    assert kept["recomputed"] == (xs.numel() + images.numel()) * 4 < 0.15 * kept["plain"]


def test_checkpointed_call_replays_python_and_torch_draws():
    weight = torch.randn(5, requires_grad=True)

    def noisy(x):
        scale = 2.0 if random.random() < 0.5 else -3.0
        return (x * weight * scale * torch.rand(5)).tanh()

    x = torch.randn(5, requires_grad=True)
    results = []
    for enabled in (False, True):
        random.seed(1)
        torch.manual_seed(1)
        out = checkpointed(noisy, x, enabled=enabled)
        after = random.random()
        grads = torch.autograd.grad(out.sum(), (x, weight))
        results.append((out.detach(), grads, after, random.random()))
    (out, grads, after, later), (out_c, grads_c, after_c, later_c) = results
    assert torch.equal(out, out_c) and after == after_c and later == later_c
    for g, g_c in zip(grads, grads_c):
        torch.testing.assert_close(g_c, g, rtol=0, atol=0)
    with torch.no_grad():  # nothing to recompute for: a plain call
        assert checkpointed(lambda t: t.grad_fn, x) is None


def _stacks(encoder):
    return [getattr(stack, "encoder", stack) for stack in encoder.encoder.encoders]


def test_zipformer_checkpointing_under_bf16_autocast_matches_the_plain_autocast_run():
    plain, lean = build_pair(ZipformerEncoder, ZIPFORMER_TINY, activation_checkpointing=True)
    xs, ilens = torch.randn(2, 50, 80), torch.tensor([50, 41])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_same_step(plain, lean, range(2), xs, ilens)
