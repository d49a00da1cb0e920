"""Streaming recognition end to end on in-memory models: audio in arbitrary pieces gives the hypotheses of the
whole utterance decoded offline (the encoder's chunked forward, "simulated"); batches of streams; the live API and
its errors. Encoders: a tiny causal Zipformer, and a small stand-in with its streaming interface
(``streaming_testing``), which isolates what is built on the encoder."""

import numpy as np
import pytest
import torch
from espnet2.asr.ctc import CTC
from espnet2.asr.espnet_model import ESPnetASRModel
from espnet2.asr.frontend.default import DefaultFrontend
from espnet2.layers.global_mvn import GlobalMVN

from hybrid_encoders.encoders.zipformer import ZipformerEncoder
from hybrid_encoders.frontends.kaldi_fbank import KaldiFbankFrontend
from hybrid_encoders.streaming.recognizer import Recognizer, StreamingDecoder, decode_utterance
from hybrid_encoders.transducer.model import TransducerASRModel
from hybrid_encoders.transducer.stateless_decoder import StatelessTransducerDecoder
from streaming_testing import StandInCausalEncoder, one_thread  # noqa: F401 (autouse fixture)

TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "<space>", "<sos/eos>"]


def stats_file(tmp_path):
    rng = np.random.default_rng(0)
    mean, std = rng.normal(-8, 2, size=80), rng.uniform(1, 3, size=80)
    np.savez(tmp_path / "stats.npz", count=100, sum=mean * 100, sum_square=(std**2 + mean**2) * 100)
    return tmp_path / "stats.npz"


def tiny_causal_zipformer(causal=True) -> ZipformerEncoder:
    """Three stacks (50, 25, 25 Hz), 32 channels; trained chunk sizes 8 and 16 (160 / 320 ms), decodes at 8."""
    return ZipformerEncoder(
        80, num_encoder_layers=1, downsampling_factor=[1, 2, 2], encoder_dim=32, encoder_unmasked_dim=32,
        feedforward_dim=48, num_heads=2, cnn_module_kernel=7, causal=causal, chunk_size=[8, 16],
        left_context_frames=[32], decode_chunk_size=8,
    )


def make_model(tmp_path, transducer=False, causal=True, kaldi=False, encoder="zipformer"):
    torch.manual_seed(0)
    frontend = KaldiFbankFrontend() if kaldi else DefaultFrontend(n_fft=512, win_length=400, hop_length=160)
    encoder = tiny_causal_zipformer(causal) if encoder == "zipformer" else StandInCausalEncoder(80, 16, causal=causal)
    size = encoder.output_size()
    parts = dict(
        vocab_size=len(TOKENS), token_list=TOKENS, frontend=frontend, specaug=None,
        normalize=None if kaldi else GlobalMVN(stats_file(tmp_path)), preencoder=None, encoder=encoder,
        postencoder=None,
    )
    if transducer:
        decoder = StatelessTransducerDecoder(len(TOKENS), decoder_dim=8, context_size=2, conv_group_size=4)
        model = TransducerASRModel(
            **parts, decoder=decoder, ctc=CTC(len(TOKENS), size), joint_network=None, ctc_weight=0.3,
            joint_net_conf={"joint_space_size": 12},
        )
    else:
        model = ESPnetASRModel(**parts, decoder=None, ctc=CTC(len(TOKENS), size), joint_network=None, ctc_weight=1.0)
    model.eval()
    with torch.no_grad():
        # Non-trivial hypotheses from a random model: the output layers see the encoder frames centred and scaled
        # (a random Zipformer's frames share a large common part), and give peaky posteriors.
        frames, _ = model.encode(waveform(2.0, 99).unsqueeze(0), torch.tensor([32000]))
        mean, std = frames[0].mean(0), frames[0].std(0) + 1e-3
        first_layers = [model.ctc.ctc_lo] + ([model.joint_network.lin_enc] if transducer else [])
        for layer in first_layers:
            layer.weight.div_(std)
            layer.bias.copy_(-layer.weight @ mean)
        for layer in (model.ctc.ctc_lo,) + ((model.joint_network.lin_out,) if transducer else ()):
            layer.weight.mul_(8.0)
            layer.bias.mul_(8.0)
    return model


def waveform(seconds: float, seed: int) -> torch.Tensor:
    """Noise whose loudness and a tone's pitch change every 80 ms, so that the features (and tokens) change."""
    generator = torch.Generator().manual_seed(seed)
    segments = []
    for _ in range(int(seconds / 0.08) + 1):
        time = torch.arange(1280) / 16000
        pitch, gain = float(torch.rand(1, generator=generator)) * 4000 + 100, float(torch.rand(1, generator=generator))
        tone = torch.sin(2 * torch.pi * pitch * time)
        segments.append(gain * (0.3 * tone + 0.1 * torch.randn(1280, generator=generator)))
    return torch.cat(segments)[: int(16000 * seconds)]


def random_pieces(wave: torch.Tensor, rng: np.random.Generator):
    position = 0
    while position < wave.numel():
        size = int(rng.integers(160, 16001))  # 10 ms .. 1 s
        yield wave[position : position + size]
        position += size


@pytest.mark.parametrize(
    "encoder,transducer,method,kaldi",
    [("zipformer", False, "ctc_greedy", False), ("zipformer", True, "modified_beam_search", True),
     ("stand_in", False, "ctc_prefix_beam", True), ("stand_in", True, "rnnt_greedy", False),
     ("stand_in", True, "modified_beam_search", False), ("stand_in", True, "ctc_prefix_beam", False)],
)
def test_live_recognizer_on_random_pieces_gives_the_offline_result(tmp_path, encoder, transducer, method, kaldi):
    model = make_model(tmp_path, transducer=transducer, kaldi=kaldi, encoder=encoder)
    recognizer = Recognizer(model, decoding_method=method, beam_size=3, token_type="char")
    rng = np.random.default_rng(0)
    for seed in (1, 2):
        wave = waveform(2.3 + seed, seed)
        expected = decode_utterance(model, method, 3, wave)[0]  # the whole utterance at once
        assert len(expected.tokens) >= 3
        partials = [recognizer.accept_waveform(piece.numpy(), sample_rate=16000) for piece in random_pieces(wave, rng)]
        final = recognizer.finalize()
        assert recognizer.hypothesis.tokens == expected.tokens
        assert recognizer.hypothesis.score == pytest.approx(expected.score, abs=1e-3)  # features equal to 1e-5
        assert final == "".join(TOKENS[t] for t in expected.tokens).replace("<space>", " ")
        if method == "ctc_greedy":  # greedy CTC never revises what it emitted
            assert all(final.startswith(partial) for partial in partials) and len(set(partials)) > 2
        recognizer.reset()


def test_batched_streams_ending_at_different_times_decode_as_alone(tmp_path):
    model = make_model(tmp_path, transducer=True)
    waves = [waveform(seconds, seed) for seed, seconds in enumerate((2.0, 0.7, 1.3))]
    decoder = StreamingDecoder(model, "modified_beam_search", batch_size=3, beam_size=3)
    piece = 2400  # 150 ms
    for start in range(0, max(w.numel() for w in waves), piece):
        pieces = [w[start : start + piece] if start < w.numel() else None for w in waves]
        final = [start < w.numel() <= start + piece for w in waves]
        decoder.accept(pieces, final, sample_rate=16000)
    assert all(decoder.ended)
    for wave, hyps in zip(waves, decoder.nbest(3)):
        expected = decode_utterance(model, "modified_beam_search", 3, wave, nbest=3)
        assert [h.tokens for h in hyps] == [h.tokens for h in expected]
        assert [h.score for h in hyps] == pytest.approx([h.score for h in expected], abs=1e-3)
    with pytest.raises(ValueError, match="stream 1 received audio after its end"):
        decoder.accept([None, waves[1][:160], None], [False] * 3)


def test_bad_input_gives_clear_errors(tmp_path):
    model = make_model(tmp_path)
    recognizer = Recognizer(model)
    assert recognizer.decoding_method == "ctc_greedy" and recognizer.sample_rate == 16000
    with pytest.raises(ValueError, match="8000 Hz, but the model's front end expects 16000 Hz"):
        recognizer.accept_waveform(np.zeros(800, dtype=np.float32), sample_rate=8000)
    with pytest.raises(ValueError, match="mono"):
        recognizer.accept_waveform(np.zeros((800, 2), dtype=np.float32))
    recognizer.accept_waveform(waveform(0.5, 0))
    recognizer.finalize()
    with pytest.raises(ValueError, match="accept_waveform\\(\\) after finalize\\(\\); call reset\\(\\)"):
        recognizer.accept_waveform(waveform(0.1, 0))
    with pytest.raises(ValueError, match="finalize\\(\\) called twice"):
        recognizer.finalize()
    recognizer.reset()
    assert recognizer.accept_waveform(np.zeros(0, dtype=np.float32)) == ""

    with pytest.warns(UserWarning, match="decode_chunk_size=24 works, but was not trained for it"):
        assert Recognizer(model, chunk_size=24).chunk_size == 24  # trained: 8, 16
    with pytest.raises(ValueError, match="is not causal"):
        Recognizer(make_model(tmp_path, causal=False))
    with pytest.raises(ValueError, match="full context can only be simulated"):
        Recognizer(model, chunk_size=-1)
    with pytest.raises(ValueError, match="needs a transducer"):
        Recognizer(model, decoding_method="rnnt_greedy")
