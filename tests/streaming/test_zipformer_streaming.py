"""ZipformerEncoder.forward_streaming: chunk by chunk with cached state == the simulated streaming forward.

The reference is ``forward`` in eval mode on each whole utterance alone (batch of one), at the same chunk setting.
Inputs come in pieces of random sizes (1 frame to more than a second), several utterances of odd, unequal lengths in
one batch, each ending whenever it ends.
"""

import random
from typing import List, Sequence

import pytest
import torch

from hybrid_encoders.encoders.zipformer import ZipformerEncoder

from conftest import causal_two_stacks

def simulated(encoder: ZipformerEncoder, utterance: torch.Tensor) -> torch.Tensor:
    """(T', D) output of the full forward on one utterance (T, F)."""
    with torch.no_grad():
        out, olens, _ = encoder(utterance[None], torch.tensor([utterance.size(0)]))
    assert int(olens[0]) == out.size(1)
    return out[0]


def stream(
    encoder: ZipformerEncoder, utterances: Sequence[torch.Tensor], rng: random.Random, sizes=(1, 2, 5, 16, 37, 100)
) -> List[torch.Tensor]:
    """Stream a batch: each call gives every unfinished utterance a piece of a random size (0 at times), and ends
    it (per-utterance is_final) with its last piece. Returns each utterance's concatenated output."""
    batch = len(utterances)
    positions, finished = [0] * batch, [False] * batch
    outputs: List[List[torch.Tensor]] = [[] for _ in range(batch)]
    states = None
    while not all(finished):
        lengths, finals = [], []
        for index, utterance in enumerate(utterances):
            if finished[index]:
                lengths.append(0)
                finals.append(False)
                continue
            size = min(rng.choice((0, *sizes)), utterance.size(0) - positions[index])
            lengths.append(size)
            finals.append(positions[index] + size == utterance.size(0))
        xs = torch.zeros(batch, max(lengths), utterances[0].size(1))
        for index, length in enumerate(lengths):
            xs[index, :length] = utterances[index][positions[index] : positions[index] + length]
            positions[index] += length
        ys, olens, states = encoder.forward_streaming(xs, torch.tensor(lengths), states, torch.tensor(finals))
        assert ys.shape == (batch, int(olens.max()), encoder.output_size())
        for index in range(batch):
            outputs[index].append(ys[index, : int(olens[index])])
            assert not ys[index, int(olens[index]) :].any()  # zero padding after each utterance's new frames
            finished[index] = finished[index] or finals[index]
    return [torch.cat(pieces) for pieces in outputs]


def assert_streams_equal_simulated(encoder, utterances, seed):
    streamed = stream(encoder, utterances, random.Random(seed))
    for utterance, output in zip(utterances, streamed):
        expected = simulated(encoder, utterance)
        assert output.shape == expected.shape  # the same number of frames
        torch.testing.assert_close(output, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size, left_context", [(8, 16), (16, 32), (8, 32)])
def test_random_pieces_of_a_batch_equal_the_simulated_forward(seed, chunk_size, left_context):
    encoder = causal_two_stacks()
    encoder.set_streaming(chunk_size, left_context)
    rng = random.Random(seed)
    # odd and even lengths; shorter than one chunk; the last chunk short or whole; 9 = the shortest with one frame
    lengths = [rng.randrange(9, 400) | 1, rng.randrange(9, 400), 2 * chunk_size + 13, 9, 30]
    utterances = [torch.randn(length, 80, generator=torch.Generator().manual_seed(seed * 10 + i)) for i, length in
                  enumerate(lengths)]  # fmt: skip
    assert_streams_equal_simulated(encoder, utterances, seed)


def test_single_frame_pieces_and_a_whole_utterance_in_one_piece():
    encoder = causal_two_stacks()
    utterances = [torch.randn(173, 80), torch.randn(96, 80)]
    streamed = stream(encoder, utterances, random.Random(5), sizes=(1,))
    for utterance, output in zip(utterances, streamed):
        torch.testing.assert_close(output, simulated(encoder, utterance), rtol=0, atol=1e-5)
    # the whole utterance as one piece, then an empty final piece
    ys, olens, states = encoder.forward_streaming(utterances[0][None], torch.tensor([173]))
    tail, tail_lens, _ = encoder.forward_streaming(torch.zeros(1, 0, 80), torch.tensor([0]), states, is_final=True)
    assert int(tail_lens[0]) > 0  # the frames that waited for right context, emitted at the end
    whole = torch.cat((ys[0, : int(olens[0])], tail[0, : int(tail_lens[0])]))
    torch.testing.assert_close(whole, simulated(encoder, utterances[0]), rtol=0, atol=1e-5)


def test_preset_s_streams_like_its_simulated_forward():
    torch.manual_seed(0)
    encoder = ZipformerEncoder(80, preset="s", causal=True).eval()  # icefall's lists; decodes at 16 / 64
    utterance = torch.randn(283, 80)
    streamed = stream(encoder, [utterance], random.Random(0), sizes=(10, 37, 64))
    torch.testing.assert_close(streamed[0], simulated(encoder, utterance), rtol=0, atol=1e-5)


def test_output_frames_come_as_soon_as_their_features_are_there():
    encoder = causal_two_stacks()  # chunk 8, left context 16
    geometry = encoder.streaming_geometry()
    features = torch.randn(1, 200, 80)
    states, emitted = None, []
    for frame in range(200):
        ys, olens, states = encoder.forward_streaming(features[:, frame : frame + 1], torch.tensor([1]), states)
        emitted.append(int(olens[0]))
    received = [frame + 1 for frame, count in enumerate(emitted) if count]
    assert received == [geometry.features_needed(chunks) for chunks in range(1, len(received) + 1)]
    assert received[:2] == [29, 45] and all(count in (0, 4) for count in emitted)  # 2C + 13, C / 2 frames each


def test_emitted_frames_never_depend_on_later_input():
    encoder = causal_two_stacks()
    features = torch.randn(1, 150, 80)
    other = features.clone()
    other[:, 77:] = torch.randn(1, 73, 80)
    first, _, states_a = encoder.forward_streaming(features[:, :77], torch.tensor([77]))
    second, _, states_b = encoder.forward_streaming(other[:, :77], torch.tensor([77]))
    assert torch.equal(first, second) and first.size(1) == 16  # 4 chunks: 4 x 16 + 13 <= 77 features
    rest_a, _, _ = encoder.forward_streaming(features[:, 77:], torch.tensor([73]), states_a, is_final=True)
    rest_b, _, _ = encoder.forward_streaming(other[:, 77:], torch.tensor([73]), states_b, is_final=True)
    assert not torch.allclose(rest_a, rest_b)
    # and the simulated forward agrees that the first 16 frames do not depend on features 77 onwards
    torch.testing.assert_close(simulated(encoder, other[0])[:16], first[0], rtol=0, atol=1e-5)


def test_state_is_bounded_and_the_old_state_stays_valid():
    encoder = causal_two_stacks()
    features = torch.randn(1, 2000, 80)

    def cache_size(state) -> int:
        tensors = [state.embed_left, *(tensor for cache in state.layers for tensor in vars(cache).values())]
        return sum(tensor.numel() for tensor in tensors)

    _, _, after_100 = encoder.forward_streaming(features[:, :100], torch.tensor([100]))
    _, _, after_1000 = encoder.forward_streaming(features[:, 100:1000], torch.tensor([900]), after_100)
    _, _, after_2000 = encoder.forward_streaming(features[:, 1000:], torch.tensor([1000]), after_1000)
    assert after_100.processed == [40] and after_2000.processed == [992]
    assert cache_size(after_100) == cache_size(after_1000) == cache_size(after_2000)
    for state in (after_100, after_1000, after_2000):  # only the features of the next chunk wait
        assert state.features[0].size(0) < encoder.streaming_geometry().features_needed(1)
    # a state is not modified by the call that continues it: the same continuation gives the same frames
    again, _, _ = encoder.forward_streaming(features[:, 100:1000], torch.tensor([900]), after_100)
    once, _, _ = encoder.forward_streaming(features[:, 100:1000], torch.tensor([900]), after_100)
    assert torch.equal(again, once)


def test_too_short_utterances_give_no_frames_and_finish():
    encoder = causal_two_stacks()
    xs = torch.randn(3, 9, 80)
    ys, olens, states = encoder.forward_streaming(xs, torch.tensor([0, 8, 9]), is_final=True)
    assert olens.tolist() == [0, 0, 1] and states.finished == [True, True, True]


def test_errors_name_the_problem():
    encoder = causal_two_stacks()
    xs = torch.randn(2, 40, 80)
    _, _, states = encoder.forward_streaming(xs, torch.tensor([40, 40]), is_final=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="utterance 0 of the batch got 3 feature frames after its final piece"):
        encoder.forward_streaming(xs[:, :3], torch.tensor([3, 3]), states)
    encoder.forward_streaming(xs[:, :3], torch.tensor([0, 3]), states)  # an ended utterance may get empty pieces
    with pytest.raises(ValueError, match="another ZipformerEncoder instance"):
        causal_two_stacks().forward_streaming(xs, torch.tensor([40, 40]), states)
    with pytest.raises(ValueError, match="another model or chunk setting .*streaming_chunk_size: 8, now 16"):
        changed = causal_two_stacks()
        _, _, own = changed.forward_streaming(xs, torch.tensor([40, 40]))
        changed.set_streaming(16, 32)
        changed.forward_streaming(xs, torch.tensor([40, 40]), own)
    with pytest.raises(ValueError, match="another model or chunk setting .*encoder_dim"):
        causal_two_stacks(encoder_dim=[16, 32]).forward_streaming(xs, torch.tensor([40, 40]), states)
    with pytest.raises(ValueError, match="states hold 2 utterances but xs has a batch of 1"):
        encoder.forward_streaming(xs[:1], torch.tensor([40]), states)
    with pytest.raises(ValueError, match="input_size=80"):
        encoder.forward_streaming(torch.randn(2, 40, 40), torch.tensor([40, 40]))
    with pytest.raises(ValueError, match="is_final must be a bool"):
        encoder.forward_streaming(xs, torch.tensor([40, 40]), None, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="states must be None or a ZipformerStreamingState"):
        encoder.forward_streaming(xs, torch.tensor([40, 40]), [torch.zeros(1)])
    with pytest.raises(ValueError, match="needs a causal model"):
        causal_two_stacks(causal=False).forward_streaming(xs, torch.tensor([40, 40]))
    with pytest.raises(ValueError, match="eval mode"):
        causal_two_stacks().train().forward_streaming(xs, torch.tensor([40, 40]))
    with pytest.raises(ValueError, match="finite chunk size and left context"):
        causal_two_stacks(decode_left_context_frames=-1).forward_streaming(xs, torch.tensor([40, 40]))
    with pytest.warns(UserWarning, match="works, but was not trained for it"):
        encoder.set_streaming(24, 48)

