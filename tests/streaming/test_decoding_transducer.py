"""Transducer searches: chunk by chunk == all frames at once; greedy vs ESPnet's; modified beam search vs a slow
reference written from icefall's description."""

import math

import numpy as np
import pytest
import torch
from espnet2.asr.transducer.beam_search_transducer import BeamSearchTransducer
from espnet2.asr_transducer.joint_network import JointNetwork

from hybrid_encoders.streaming.decoding import build_search
from hybrid_encoders.streaming.decoding_transducer import ModifiedBeamSearch, TransducerGreedySearch
from hybrid_encoders.transducer.stateless_decoder import StatelessTransducerDecoder
from streaming_testing import advance_in_pieces, peaky_encoder_out, random_splits

VOCAB, ENCODER_DIM = 6, 10


def make_parts(seed=0, context_size=2):
    torch.manual_seed(seed)
    decoder = StatelessTransducerDecoder(VOCAB, decoder_dim=8, context_size=context_size, conv_group_size=4).eval()
    joint = JointNetwork(VOCAB, ENCODER_DIM, 8, joint_space_size=12).eval()
    return decoder, joint


def decoder_output(decoder, tokens):
    """The decoder output after the start blank and ``tokens``."""
    return decoder(torch.tensor([[decoder.blank_id, *tokens]]))[0, -1]


def slow_greedy(decoder, joint, encoder_out):
    """One symbol per frame at most; score = sum over frames of the chosen symbol's log-probability."""
    tokens, score = [], 0.0
    for frame in encoder_out:
        log_probs = torch.log_softmax(joint(frame, decoder_output(decoder, tokens)), dim=-1)
        best = int(log_probs.argmax())
        score += float(log_probs[best])
        if best != decoder.blank_id:
            tokens.append(best)
    return tuple(tokens), score


def slow_modified_beam_search(decoder, joint, encoder_out, beam):
    """Per frame: every (hypothesis, symbol) pair scored, the ``beam`` best kept, equal token sequences merged."""
    hyps = {(): 0.0}
    for frame in encoder_out:
        pairs = []
        for tokens, score in hyps.items():
            log_probs = torch.log_softmax(joint(frame, decoder_output(decoder, tokens)), dim=-1).double().tolist()
            for symbol, log_prob in enumerate(log_probs):
                pairs.append((score + log_prob, tokens if symbol == decoder.blank_id else tokens + (symbol,)))
        pairs.sort(key=lambda pair: -pair[0])
        hyps = {}
        for score, tokens in pairs[:beam]:
            hyps[tokens] = score if tokens not in hyps else max(hyps[tokens], score) + math.log1p(
                math.exp(-abs(hyps[tokens] - score))
            )
    return sorted(hyps.items(), key=lambda item: -item[1])


@torch.no_grad()
@pytest.mark.parametrize("kind", ["greedy", "modified_beam"])
def test_any_chunking_gives_the_hypotheses_and_scores_of_all_frames_at_once(kind):
    decoder, joint = make_parts()
    lengths = torch.tensor([30, 11, 23])
    encoder_out = peaky_encoder_out(3, 30, ENCODER_DIM, seed=2)

    def make():
        if kind == "greedy":
            return TransducerGreedySearch(decoder, joint, 3)
        return ModifiedBeamSearch(decoder, joint, 3, beam_size=4)

    offline = make()
    offline.advance(encoder_out, lengths)
    expected = offline.nbest(4)
    assert all(len(hyps[0].tokens) >= 3 for hyps in expected)
    rng = np.random.default_rng(1)
    for _ in range(3):
        assert advance_in_pieces(make(), encoder_out, lengths, random_splits(30, rng)).nbest(4) == expected


@torch.no_grad()
def test_greedy_tokens_equal_espnets_greedy_search_and_scores_the_slow_reference():
    decoder, joint = make_parts(seed=3, context_size=3)
    lengths = torch.tensor([25, 9])
    encoder_out = peaky_encoder_out(2, 25, ENCODER_DIM, seed=4)
    search = TransducerGreedySearch(decoder, joint, 2)
    advance_in_pieces(search, encoder_out, lengths, [0, 4, 5, 16, 25])
    espnet = BeamSearchTransducer(decoder=decoder, joint_network=joint, beam_size=1)
    for b, hyp in enumerate(search.best()):
        frames = encoder_out[b, : lengths[b]]
        assert list(hyp.tokens) == espnet(frames)[0].yseq[1:]
        tokens, score = slow_greedy(decoder, joint, frames)
        assert hyp.tokens == tokens and len(tokens) >= 3
        assert hyp.score == pytest.approx(score, abs=1e-4)  # float32 products grouped differently


@torch.no_grad()
@pytest.mark.parametrize("beam,seed", [(1, 0), (3, 1), (5, 2)])
def test_modified_beam_search_equals_the_slow_reference(beam, seed):
    decoder, joint = make_parts(seed=seed)
    lengths = torch.tensor([14, 20])
    encoder_out = peaky_encoder_out(2, 20, ENCODER_DIM, seed=seed) / 2  # flatter posteriors: real competition
    search = ModifiedBeamSearch(decoder, joint, 2, beam_size=beam)
    advance_in_pieces(search, encoder_out, lengths, random_splits(20, np.random.default_rng(seed)))
    for b, hyps in enumerate(search.nbest(beam)):
        expected = slow_modified_beam_search(decoder, joint, encoder_out[b, : lengths[b]], beam)
        assert [hyp.tokens for hyp in hyps] == [tokens for tokens, _ in expected]
        for hyp, (_, score) in zip(hyps, expected):
            assert hyp.score == pytest.approx(score, abs=1e-4)
    if beam == 1:  # a beam of one is greedy search
        greedy = TransducerGreedySearch(decoder, joint, 2)
        greedy.advance(encoder_out, lengths)
        assert [hyp.tokens for hyp in greedy.best()] == [hyp.tokens for hyp in search.best()]


@torch.no_grad()
def test_a_stream_decodes_the_same_alone_and_in_a_batch():
    decoder, joint = make_parts(seed=7)
    lengths = torch.tensor([18, 7, 12])
    encoder_out = peaky_encoder_out(3, 18, ENCODER_DIM, seed=7)
    for make in (lambda n: TransducerGreedySearch(decoder, joint, n), lambda n: ModifiedBeamSearch(decoder, joint, n, 3)):
        batched = make(3)
        advance_in_pieces(batched, encoder_out, lengths, [0, 5, 6, 18])
        for b, hyp in enumerate(batched.best()):
            alone = make(1)
            alone.advance(encoder_out[b : b + 1, : lengths[b]], lengths[b : b + 1])
            assert alone.best()[0].tokens == hyp.tokens
            assert alone.best()[0].score == pytest.approx(hyp.score, abs=1e-5)


def test_unsupported_parts_are_rejected():
    decoder, joint = make_parts()
    with pytest.raises(ValueError, match="decoder Linear is not supported; it needs decoder: stateless_transducer"):
        TransducerGreedySearch(torch.nn.Linear(2, 2), joint, 1)
    model = torch.nn.Module()
    model.decoder, model.joint_network, model.use_transducer_decoder, model.ctc = decoder, joint, True, None
    assert isinstance(build_search(model, "rnnt_greedy", 2), TransducerGreedySearch)
    assert isinstance(build_search(model, "modified_beam_search", 2, beam_size=2), ModifiedBeamSearch)
    with pytest.raises(ValueError, match="no CTC branch"):
        build_search(model, "ctc_prefix_beam", 1)
