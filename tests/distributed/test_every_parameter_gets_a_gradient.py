"""Every parameter of our encoders, models and decoders gets a gradient on every training step, in every training
mode, so that ESPnet's DistributedDataParallel works with its default ``unused_parameters: false``.

Random skips are the danger: a skip that takes a module out of the graph leaves its parameters without a gradient
on the steps where it fires. The Zipformer tests therefore run at batch counts where each schedule is non-zero and,
since a rare skip could hide from a few seeds, once more with every skip rate forced to 1.0 (every skip fires).
"""

import random

import pytest
import torch
from conftest import TINY_TOKENS, assert_every_parameter_gets_a_gradient, tiny_training_config

from espnet2.asr.ctc import CTC
from espnet2.asr.decoder.transducer_decoder import TransducerDecoder
from espnet2.asr.decoder.transformer_decoder import TransformerDecoder
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.asr_transducer.joint_network import JointNetwork
from hybrid_encoders.encoders import zipformer
from hybrid_encoders.encoders.hybridformer import HybridformerEncoder
from hybrid_encoders.encoders.squeezeformer import SqueezeformerEncoder
from hybrid_encoders.encoders.zipformer import ZipformerEncoder
from hybrid_encoders.regularization.balancer import Balancer
from hybrid_encoders.regularization.scheduled_float import ScheduledFloat
from hybrid_encoders.regularization.whiten import Whiten
from hybrid_encoders.transducer.model import TransducerASRModel
from hybrid_encoders.transducer.stateless_decoder import StatelessTransducerDecoder

FEATURES = 20
VOCAB = len(TINY_TOKENS)
SEEDS = range(4)
# Zipformer's random skips and where they live: every one of them is forced to fire below.
ZIPFORMER_SKIP_RATES = (
    "pos_emb_skip_rate",  # RelPositionAttentionWeights: the positional term, whole batch
    "attention_skip_rate",  # ZipformerLayer: the three attention-weighted modules, per sequence
    "conv_skip_rate",
    "ff2_skip_rate",
    "ff3_skip_rate",
    "const_attention_rate",  # NonlinAttention sees uniform weights instead of head 0
    "skip_rate",  # BypassModule: layer drop, per sequence
    "layerdrop_rate",  # the embed's ConvNeXt block
)


def batch():
    """A padded batch of 3 feature sequences and their label sequences (padding -1), fresh tensors each call."""
    generator = torch.Generator().manual_seed(11)
    speech = torch.randn(3, 48, FEATURES, generator=generator)
    text = torch.tensor([[2, 3, 4, 5], [3, 3, -1, -1], [5, -1, -1, -1]])
    return speech, torch.tensor([48, 40, 33]), text, torch.tensor([4, 2, 1])


def encoder_conf(system, **overrides):
    return {**tiny_training_config(system)["encoder_conf"], **overrides}


def build_encoder(kind, **overrides):
    torch.manual_seed(0)
    classes = {"squeezeformer": SqueezeformerEncoder, "hybridformer": HybridformerEncoder, "zipformer": ZipformerEncoder}
    return classes[kind](FEATURES, **encoder_conf(kind, **overrides))


def encoder_step(encoder):
    """One training step of an encoder alone: the loss is the mean square of its output."""

    def step():
        speech, speech_lengths, _, _ = batch()
        out, _, _ = encoder(speech, speech_lengths)
        return (out[0] if isinstance(out, tuple) else out).pow(2).mean()

    return step


def model_step(model):
    def step():
        return model(*batch())[0]

    return step


def attention_model(encoder, **model_conf):
    """ESPnet's own CTC/attention model around ``encoder`` (``interctc_weight`` etc. in ``model_conf``)."""
    decoder = TransformerDecoder(VOCAB, encoder.output_size(), attention_heads=2, linear_units=16, num_blocks=1)
    return ESPnetASRModel(
        vocab_size=VOCAB, token_list=TINY_TOKENS, frontend=None, specaug=None, normalize=None, preencoder=None,
        encoder=encoder, postencoder=None, decoder=decoder, ctc=CTC(VOCAB, encoder.output_size()), joint_network=None,
        **model_conf,
    )  # fmt: skip


def transducer_model(encoder, decoder="stateless", context_size=2, **model_conf):
    """``model: espnet_rnnt`` around ``encoder`` with our stateless decoder or ESPnet's RNN transducer decoder."""
    joint_network = None
    if decoder == "stateless":
        decoder = StatelessTransducerDecoder(VOCAB, decoder_dim=8, context_size=context_size)
        model_conf.setdefault("joint_net_conf", {"joint_space_size": 12})
    else:
        decoder = TransducerDecoder(VOCAB, hidden_size=8)
        joint_network = JointNetwork(VOCAB, encoder.output_size(), 8, joint_space_size=12)
    model_conf.setdefault("ctc_weight", 0.3)
    return TransducerASRModel(
        vocab_size=VOCAB, token_list=TINY_TOKENS, frontend=None, specaug=None, normalize=None, preencoder=None,
        encoder=encoder, postencoder=None, decoder=decoder, ctc=CTC(VOCAB, encoder.output_size()),
        joint_network=joint_network, **model_conf,
    )  # fmt: skip


def set_batch_count(encoder, count):
    encoder.batch_count.fill_(count)
    encoder._step_counter.forget()


# ----- Zipformer ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_count", [0, 2000, 6000, 20000, 100000])
def test_zipformer_at_batch_counts_where_each_skip_is_active(batch_count):
    # 0 and 2000: the positional skip (until 4000) and everything else; 6000: attention/conv skips (until 16000)
    # and layer-drop warm-up; 20000: feed-forward skips (until 50000); 100000: final layer drop, constant attention
    encoder = build_encoder("zipformer", schedule_batch_scale=1.0)
    set_batch_count(encoder, batch_count)
    step = encoder_step(encoder)

    def step_at_this_count():
        set_batch_count(encoder, batch_count)  # the helper's zero_grad changes no version; keep the count fixed
        return step()

    assert_every_parameter_gets_a_gradient(encoder, step_at_this_count, SEEDS)


def force_rates(module, names, value):
    """Replace every schedule or rate called one of ``names`` below ``module`` by the constant ``value``."""
    found = set()
    for sub in list(module.modules()):
        for name in names:
            if hasattr(sub, name):
                setattr(sub, name, ScheduledFloat((0.0, value), default=value))
                found.add(name)
    assert found == set(names), f"not found: {set(names) - found}"


def test_zipformer_with_every_skip_firing(monkeypatch):
    encoder = build_encoder("zipformer")
    force_rates(encoder, ZIPFORMER_SKIP_RATES, 1.0)
    monkeypatch.setattr(zipformer, "FEATURE_MASK_PROB", 1.0)
    for sub in encoder.modules():
        if isinstance(sub, Balancer):
            sub.prob = ScheduledFloat((0.0, 1.0), default=1.0)
        if isinstance(sub, Whiten):
            sub.min_prob = sub.max_prob = sub.prob = 1.0
    assert_every_parameter_gets_a_gradient(encoder, encoder_step(encoder), range(2))


def test_the_positional_skip_keeps_icefalls_expected_output():
    """The skip still fires with probability ``pos_emb_skip_rate`` per forward for the whole batch, and a skipped
    forward equals the attention without its positional term (icefall's skip), with zero positional gradients."""
    layer = build_encoder("zipformer").encoder.encoders[0].layers[0].self_attn_weights.train()
    for sub in layer.modules():  # the gradient-only helpers stay off
        if isinstance(sub, Balancer):
            sub.prob = ScheduledFloat((0.0, 0.0))
        if isinstance(sub, Whiten):
            sub.prob = sub.min_prob = sub.max_prob = 0.0
    layer.pos_emb_skip_rate = ScheduledFloat((0.0, 0.3), default=0.3)
    x = torch.randn(2, 9, 16, requires_grad=True)
    pos_emb = torch.randn(17, 8)
    with_positions = layer.eval()(x, pos_emb).detach()  # evaluation never skips
    weight = layer.linear_pos.weight.data.clone()
    layer.linear_pos.weight.data.zero_()  # no positional term at all: icefall's output for a skipped forward
    without_positions = layer(x, pos_emb).detach()
    layer.linear_pos.weight.data.copy_(weight)
    layer.train()
    assert not torch.allclose(with_positions, without_positions, atol=1e-6)

    random.seed(0)
    skipped = 0
    for _ in range(200):
        layer.zero_grad(set_to_none=True)
        weights = layer(x, pos_emb)
        weights.pow(2).sum().backward()
        assert layer.linear_pos.weight.grad is not None
        if torch.allclose(weights, without_positions, atol=1e-6):
            skipped += 1
            assert layer.linear_pos.weight.grad.abs().max() == 0
        else:
            torch.testing.assert_close(weights, with_positions)
            assert layer.linear_pos.weight.grad.abs().max() > 0
    # binomial(200, 0.3): mean 60, standard deviation 6.5
    assert 40 <= skipped <= 80


# ----- Squeezeformer, HybridFormer, intermediate CTC ------------------------------------------------------------


def test_squeezeformer_with_time_reduction_and_self_conditioned_intermediate_ctc():
    encoder = build_encoder("squeezeformer", interctc_layer_idx=[1], interctc_use_conditioning=True)
    assert encoder.time_reduce_idx is not None  # the Temporal U-Net is on
    model = attention_model(encoder, ctc_weight=0.3, interctc_weight=0.5)
    assert encoder.conditioning_layer is not None
    assert_every_parameter_gets_a_gradient(model, model_step(model), SEEDS)


@pytest.mark.parametrize("nsr_mode", ["train", "search"])
def test_hybridformer_with_intermediate_ctc(nsr_mode):
    encoder = build_encoder("hybridformer", nsr_mode=nsr_mode, interctc_layer_idx=[1])
    model = attention_model(encoder, ctc_weight=0.3, interctc_weight=0.5)
    assert_every_parameter_gets_a_gradient(model, model_step(model), SEEDS)


def test_zipformer_ctc_attention_model():
    model = attention_model(build_encoder("zipformer"), ctc_weight=0.3)
    assert_every_parameter_gets_a_gradient(model, model_step(model), SEEDS)


# ----- transducer ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_conf, updates",
    [
        ({"transducer_loss": "pruned", "prune_range": 2, "simple_loss_warmup_steps": 4}, 0),  # warm-up
        ({"transducer_loss": "pruned", "simple_loss_scale": 0.0, "simple_loss_warmup_steps": 4}, 10),  # no simple loss
        ({"transducer_loss": "full", "decoder": "rnn"}, 0),
        ({"transducer_loss": "full", "context_size": 1, "ctc_weight": 0.0}, 0),
    ],
)
def test_zipformer_transducer(model_conf, updates):
    model = transducer_model(build_encoder("zipformer"), **model_conf)
    model.num_updates.fill_(updates)
    model._step_counter.forget()
    assert_every_parameter_gets_a_gradient(model, model_step(model), SEEDS)


def test_squeezeformer_transducer_with_intermediate_ctc():
    encoder = build_encoder("squeezeformer", interctc_layer_idx=[1], interctc_use_conditioning=True)
    model = transducer_model(encoder, transducer_loss="pruned", interctc_weight=0.5)
    assert_every_parameter_gets_a_gradient(model, model_step(model), SEEDS)
