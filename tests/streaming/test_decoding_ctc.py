"""CTC searches: chunk by chunk == all frames at once; greedy vs its definition; prefix beam vs enumeration."""

import itertools
import math

import numpy as np
import pytest
import torch
from espnet2.asr.ctc import CTC

from hybrid_encoders.streaming.decoding import build_search
from hybrid_encoders.streaming.decoding_ctc import CtcGreedySearch, CtcPrefixBeamSearch
from streaming_testing import advance_in_pieces, peaky_encoder_out, random_splits


def make_ctc(vocab: int, dim: int = 6, seed: int = 0) -> CTC:
    torch.manual_seed(seed)
    return CTC(odim=vocab, encoder_output_size=dim).eval()


@torch.no_grad()
@pytest.mark.parametrize("search_kind", ["greedy", "prefix_beam"])
def test_any_chunking_gives_the_hypotheses_and_scores_of_all_frames_at_once(search_kind):
    ctc = make_ctc(vocab=7)
    lengths = torch.tensor([40, 17, 1, 33])
    encoder_out = peaky_encoder_out(4, 40, 6, seed=1)

    def make():
        if search_kind == "greedy":
            return CtcGreedySearch(ctc, 4, blank_id=0)
        return CtcPrefixBeamSearch(ctc, 4, blank_id=0, beam_size=3)

    offline = make()
    offline.advance(encoder_out, lengths)
    expected = offline.nbest(3)
    assert any(len(hyps[0].tokens) > 3 for hyps in expected)
    rng = np.random.default_rng(0)
    for _ in range(3):
        chunked = advance_in_pieces(make(), encoder_out, lengths, random_splits(40, rng))
        assert chunked.nbest(3) == expected  # tokens and scores identical (the same per-frame arithmetic)
    # partial results are the results on the frames so far
    partial = make()
    partial.advance(encoder_out[:, :10], lengths.clamp(max=10))
    prefix_only = make()
    prefix_only.advance(encoder_out[:, :10].clone(), lengths.clamp(max=10))
    assert partial.best() == prefix_only.best()


@torch.no_grad()
def test_greedy_is_best_path_collapsed():
    ctc = make_ctc(vocab=5)
    encoder_out = peaky_encoder_out(1, 50, 6, seed=3)
    log_probs = ctc.log_softmax(encoder_out)[0]
    best = log_probs.argmax(-1)
    expected = [int(token) for token in torch.unique_consecutive(best) if int(token) != 0]
    search = advance_in_pieces(CtcGreedySearch(ctc, 1), encoder_out, torch.tensor([50]), [0, 1, 2, 9, 31, 50])
    (hyp,) = search.best()
    assert list(hyp.tokens) == expected and len(expected) > 5
    # the reference projects all frames in one product, the search one frame at a time: float32 rounding apart
    assert hyp.score == pytest.approx(float(log_probs.max(-1).values.double().sum()), abs=1e-5)


def brute_force_prefix_scores(log_probs: torch.Tensor, blank: int = 0) -> dict:
    """log P(label sequence) for every label sequence: log-sum over all V^T alignments that collapse to it."""
    frames, vocab = log_probs.shape
    totals = {}
    table = log_probs.double().tolist()
    for path in itertools.product(range(vocab), repeat=frames):
        labels = tuple(token for i, token in enumerate(path) if token != blank and (i == 0 or token != path[i - 1]))
        score = sum(table[t][token] for t, token in enumerate(path))
        totals.setdefault(labels, []).append(score)
    return {labels: max(s) + math.log(sum(math.exp(x - max(s)) for x in s)) for labels, s in totals.items()}


@torch.no_grad()
@pytest.mark.parametrize("vocab,frames,seed", [(3, 7, 0), (4, 6, 1), (3, 8, 2)])
def test_prefix_beam_with_an_unbounded_beam_equals_enumeration_of_all_alignments(vocab, frames, seed):
    ctc = make_ctc(vocab, seed=seed)
    encoder_out = peaky_encoder_out(1, frames, 6, seed=seed) / 3  # posteriors less peaky: many sequences matter
    expected = brute_force_prefix_scores(ctc.log_softmax(encoder_out)[0])
    search = CtcPrefixBeamSearch(ctc, 1, blank_id=0, beam_size=10**6)
    advance_in_pieces(search, encoder_out, torch.tensor([frames]), random_splits(frames, np.random.default_rng(seed), 3))
    got = {hyp.tokens: hyp.score for hyp in search.nbest(10**6)[0]}
    assert set(got) == set(expected)
    for labels, score in expected.items():
        assert got[labels] == pytest.approx(score, abs=1e-5)  # float32 posteriors, projected in another grouping
    assert search.best()[0].tokens == max(expected, key=expected.get)


@torch.no_grad()
def test_prefix_beam_with_a_small_beam_finds_the_brute_force_best_on_peaky_posteriors():
    ctc = make_ctc(4, seed=5)
    encoder_out = peaky_encoder_out(1, 7, 6, seed=5)
    expected = brute_force_prefix_scores(ctc.log_softmax(encoder_out)[0])
    search = CtcPrefixBeamSearch(ctc, 1, blank_id=0, beam_size=3)
    search.advance(encoder_out, torch.tensor([7]))
    best = search.best()[0]
    assert best.tokens == max(expected, key=expected.get)
    assert best.score <= expected[best.tokens] + 1e-9  # pruned alignments can only lower a prefix's score


def test_build_search_rejects_what_the_model_cannot_decode():
    model = torch.nn.Module()
    model.ctc, model.blank_id = None, 0
    with pytest.raises(ValueError, match="no CTC branch"):
        build_search(model, "ctc_greedy", 1)
    with pytest.raises(ValueError, match="needs a transducer"):
        build_search(model, "modified_beam_search", 1)
    with pytest.raises(ValueError, match="--decoding_method must be one of"):
        build_search(model, "attention", 1)
    model.ctc = make_ctc(5)
    with pytest.raises(ValueError, match="--beam_size must be >= 1"):
        build_search(model, "ctc_prefix_beam", 1, beam_size=0)
    assert isinstance(build_search(model, "ctc_prefix_beam", 2, beam_size=4), CtcPrefixBeamSearch)
    search = build_search(model, "ctc_greedy", 2)
    with pytest.raises(ValueError, match="encoder_out must be \\(2, T, D\\)"):
        search.advance(torch.zeros(1, 3, 6), torch.tensor([3]))
    with pytest.raises(ValueError, match="lengths must be"):
        search.advance(torch.zeros(2, 3, 6), torch.tensor([3, 4]))
