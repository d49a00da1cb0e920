"""The stateless decoder: its arithmetic, its causality, and ESPnet's transducer search driving it."""

import pytest
import torch

from espnet2.asr.transducer.beam_search_transducer import BeamSearchTransducer, Hypothesis
from espnet2.asr_transducer.joint_network import JointNetwork
from hybrid_encoders.transducer.stateless_decoder import StatelessTransducerDecoder

VOCAB = 9


def make_decoder(context_size=2, seed=0):
    torch.manual_seed(seed)
    return StatelessTransducerDecoder(VOCAB, 16, decoder_dim=8, context_size=context_size, conv_group_size=4).eval()


def reference_output(decoder, labels):
    """Output u by hand: ReLU(sum_k W[:, :, k] @ emb(labels[u - c + 1 + k])), zero embeddings before the start."""
    weight = decoder.conv.weight  # (D, D / groups, c)
    dim, group_size, context = weight.shape
    outputs = []
    for u in range(len(labels)):
        value = torch.zeros(dim)
        for k in range(context):
            position = u - context + 1 + k
            if position < 0:
                continue
            embedded = decoder.embedding.weight[labels[position]]
            for channel in range(dim):
                group = channel // group_size
                value[channel] += weight[channel, :, k] @ embedded[group * group_size : (group + 1) * group_size]
        outputs.append(torch.relu(value))
    return torch.stack(outputs)


def test_forward_matches_hand_computation():
    decoder = make_decoder(context_size=3)
    labels = torch.tensor([[0, 4, 2, 7, 1], [0, 3, 3, 0, 0]])
    out = decoder(labels)
    assert out.shape == (2, 5, 8)
    for b in range(2):
        torch.testing.assert_close(out[b], reference_output(decoder, labels[b].tolist()))


def test_context_size_one_is_the_embedding():
    decoder = make_decoder(context_size=1)
    labels = torch.tensor([[0, 5, 6]])
    torch.testing.assert_close(decoder(labels)[0], decoder.embedding.weight[[0, 5, 6]])


def test_output_depends_only_on_the_last_context_size_labels():
    decoder = make_decoder(context_size=2)
    labels = torch.tensor([[0, 1, 2, 3, 4, 5]])
    changed = labels.clone()
    changed[0, 2] = 8
    difference = (decoder(labels) - decoder(changed)).abs().amax(dim=2)[0]
    assert (difference[[0, 1, 4, 5]] == 0).all()
    assert (difference[[2, 3]] > 0).all()


def walk(decoder, labels):
    """Score a label sequence one step at a time through the search API, as BeamSearchTransducer does."""
    hyp = Hypothesis(score=0.0, yseq=[labels[0]], dec_state=decoder.init_state(1))
    outputs = []
    cache = {}
    for label in labels[1:] + [None]:
        dec_out, state, lm_label = decoder.score(hyp, cache)
        assert lm_label.tolist() == [hyp.yseq[-1]]
        outputs.append(dec_out)
        if label is not None:
            hyp = Hypothesis(score=0.0, yseq=hyp.yseq + [label], dec_state=state)
    return torch.stack(outputs), hyp


def test_step_by_step_scoring_equals_the_training_forward():
    decoder = make_decoder(context_size=3)
    labels = [0, 4, 2, 7, 1]
    stepped, _ = walk(decoder, labels)
    torch.testing.assert_close(stepped, decoder(torch.tensor([labels]))[0])


def test_batch_score_equals_score_and_fills_the_cache():
    decoder = make_decoder(context_size=2)
    sequences = [[0], [0, 3], [0, 3, 5], [0, 6, 6]]
    hyps = [walk(decoder, seq)[1] for seq in sequences]
    expected = torch.stack([decoder.score(hyp, {})[0] for hyp in hyps])
    cache = {}
    decoder.score(hyps[1], cache)  # one cached, three computed in a batch
    states = decoder.create_batch_states(None, [hyp.dec_state for hyp in hyps])
    dec_out, new_states, lm_labels = decoder.batch_score(hyps, states, cache, use_lm=True)
    torch.testing.assert_close(dec_out, expected)
    assert lm_labels.tolist() == [[0], [3], [5], [6]]
    assert new_states.tolist() == [[-1, 0], [0, 3], [3, 5], [6, 6]]
    assert decoder.select_state(new_states, 2).tolist() == [[3, 5]]
    assert len(cache) == 4
    assert decoder.batch_score(hyps, states, cache, use_lm=False)[2] is None


def greedy_by_hand(decoder, joint, encoder_out):
    """Greedy transducer decoding (one label per frame at most) using only ``forward`` on whole sequences."""
    labels = [decoder.blank_id]
    for frame in encoder_out:
        dec_out = decoder(torch.tensor([labels]))[0, -1]
        best = int(joint(frame, dec_out).argmax())
        if best != decoder.blank_id:
            labels.append(best)
    return labels


@torch.no_grad()
def test_espnet_greedy_search_equals_greedy_by_hand():
    decoder = make_decoder(context_size=2)
    torch.manual_seed(1)
    joint = JointNetwork(VOCAB, 16, decoder.dunits, joint_space_size=12).eval()
    encoder_out = torch.randn(30, 16) * 3
    hyps = BeamSearchTransducer(decoder, joint, beam_size=1)(encoder_out)
    expected = greedy_by_hand(decoder, joint, encoder_out)
    assert len(expected) > 3  # the test exercises label emissions
    assert hyps[0].yseq == expected


@pytest.mark.parametrize("search_type", ["default", "tsd", "alsd", "nsc", "maes"])
@torch.no_grad()
def test_every_espnet_beam_search_runs(search_type):
    decoder = make_decoder(context_size=2)
    torch.manual_seed(2)
    joint = JointNetwork(VOCAB, 16, decoder.dunits, joint_space_size=12).eval()
    search = BeamSearchTransducer(decoder, joint, beam_size=3, search_type=search_type, nbest=2)
    hyps = search(torch.randn(12, 16) * 3)
    assert 1 <= len(hyps) <= 3  # nbest, except ALSD, which returns its whole beam
    for hyp in hyps:
        assert hyp.yseq[0] == decoder.blank_id
        assert all(0 < label < VOCAB for label in hyp.yseq[1:])


@pytest.mark.parametrize(
    "conf, message",
    [
        ({"context_size": 0}, "context_size must be >= 1"),
        ({"decoder_dim": 10, "conv_group_size": 4}, "divisible by conv_group_size"),
        ({"blank_id": VOCAB}, "blank_id"),
        ({"decoder_dim": 0}, "decoder_dim must be >= 1"),
    ],
)
def test_bad_configuration(conf, message):
    with pytest.raises(ValueError, match=message):
        StatelessTransducerDecoder(VOCAB, 16, **conf)
