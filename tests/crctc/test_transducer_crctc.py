"""``model: espnet_rnnt`` with ``cr_loss_scale`` (pruned transducer + CR-CTC on the CTC head): its losses averaged over
the two views, the weighted sum, gradients, one update count, and unchanged behaviour without CR-CTC."""

import pytest
import torch
from crctc_tiny import batch, encode_views_by_hand, modules

from hybrid_encoders.transducer.model import TransducerASRModel


def build_transducer(**model_conf):
    return TransducerASRModel(
        **modules("stateless"), transducer_loss="pruned", prune_range=3, joint_net_conf={"joint_space_size": 12},
        **model_conf,
    )


def test_transducer_with_cr_ctc_averages_its_losses_over_the_views_and_counts_updates_once():
    model = build_transducer(ctc_weight=0.1, cr_loss_scale=0.02, cr_loss_warmup_steps=0, simple_loss_warmup_steps=2)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    for step in range(3):
        torch.manual_seed(14)
        loss, stats, weight = model(*batch())
        assert int(model.num_updates) == step and int(weight) == 3
        assert loss.item() == pytest.approx(
            stats["loss_transducer"].item() + 0.1 * stats["loss_ctc"].item() + 0.02 * stats["loss_cr"].item(), rel=1e-6
        )
        loss.backward()
        optimizer.step()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name

    encoder_out, encoder_out_lens = encode_views_by_hand(model, seed=14)
    _, _, text, _ = batch()
    per_view = [model._calc_transducer_loss(encoder_out[rows], encoder_out_lens[rows], text)[0].item()
                for rows in (slice(0, 3), slice(3, 6))]
    assert stats["loss_transducer"].item() == pytest.approx(sum(per_view) / 2, rel=1e-5)
    assert {"loss_simple", "loss_pruned", "loss_cr"} <= stats.keys()


def test_transducer_without_cr_is_unchanged_by_default():
    model = build_transducer(ctc_weight=0.1).train()
    inputs = []
    model.encoder.register_forward_hook(lambda module, args, output: inputs.append(args[0]))
    _, stats, _ = model(*batch())
    assert model.cr_loss_scale == 0.0 and "loss_cr" not in stats and inputs[0].shape == (3, 60, 20)


def test_cr_ctc_needs_the_ctc_head():
    with pytest.raises(ValueError, match="set model_conf.ctc_weight > 0"):
        build_transducer(ctc_weight=0.0, cr_loss_scale=0.02)
