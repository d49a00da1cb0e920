"""Streaming recognition with an ESPnet ASR model whose encoder is causal: audio in, partial hypotheses out.

    audio pieces --(StreamingFeatures, one per stream)--> features --(encoder.forward_streaming)--> encoder frames
        --(StreamingSearch)--> hypotheses --(ESPnet's token list and tokenizer)--> text

* :class:`StreamingDecoder`: ``B`` streams together (the file decoder ``hybrid_encoders.bin.asr_inference_streaming``
  decodes a batch of utterances this way, each finishing when its audio ends).
* :class:`Recognizer`: one live stream: ``accept_waveform(samples)`` -> partial text, ``finalize()`` -> final text,
  ``reset()`` for the next utterance.

The model must be streamable: ``encoder: zipformer`` with ``causal: true`` (any encoder with ``forward_streaming``
and a ``causal`` config works), no pre-/post-encoder, a front end from :mod:`.frontend`. Its chunk size and left
context are the encoder's decode setting, which ``chunk_size`` / ``left_context_frames`` change
(``encoder.set_streaming``; a value the model was not trained with works, with a warning).
"""

import logging
from typing import List, Optional, Sequence, Tuple

import torch

from hybrid_encoders.encoders.zipformer import decode_chunking
from hybrid_encoders.streaming.decoding import CTC_METHODS, Hypothesis, build_search
from hybrid_encoders.streaming.frontend import TooShortAudioError, streaming_features


def configure_streaming(
    model: torch.nn.Module,
    chunk_size: Optional[int] = None,
    left_context_frames: Optional[int] = None,
    simulate: bool = False,
) -> Tuple[int, int]:
    """Check that ``model`` can stream and set its encoder's chunking; returns (chunk_size, left_context_frames).

    Args:
        model: an ESPnet ASR model (eval mode).
        chunk_size: encoder chunk in 50 Hz embed frames (16 = 320 ms), -1 = full context (simulation only); None
            keeps the encoder's decode setting.
        left_context_frames: left context in embed frames, -1 = unlimited (simulation only); None keeps the
            current one.
        simulate: the whole utterance will go through the encoder's chunked ``forward`` (unbounded settings allowed).

    Raises:
        ValueError: a non-causal encoder, a pre- or post-encoder, an unbounded setting for real streaming, or a
            chunking the encoder rejects. Nothing is changed when it raises.
    """
    encoder = model.encoder
    config = getattr(encoder, "config", {})
    if not hasattr(encoder, "forward_streaming") or not config.get("causal", False):
        raise ValueError(
            f"streaming: the encoder ({type(encoder).__name__}) is not causal: train a streaming model "
            "(encoder: zipformer with encoder_conf causal: true) or decode offline with espnet2.bin.asr_inference"
        )
    for name in ("preencoder", "postencoder"):
        if getattr(model, name, None) is not None:
            raise ValueError(f"streaming: a model with a {name} is not supported")
    current_chunk, current_left = decode_chunking(config)
    chunk_size = current_chunk if chunk_size is None else chunk_size
    left_context_frames = current_left if left_context_frames is None else left_context_frames
    if not simulate and -1 in (chunk_size, left_context_frames):
        raise ValueError(
            f"streaming: chunk_size={chunk_size} and left_context_frames={left_context_frames} must be bounded (not "
            "-1) to stream; full context can only be simulated (asr_inference_streaming --simulate true)"
        )
    if (chunk_size, left_context_frames) != (current_chunk, current_left):
        encoder.set_streaming(chunk_size, left_context_frames)
    return chunk_size, left_context_frames


def choose_method(model: torch.nn.Module, decoding_method: Optional[str] = None, beam_size: int = 4) -> str:
    """The search to use: ``decoding_method``, or greedy search over the transducer if the model has one, else over
    its CTC branch. Checks that the model can run it (ValueError otherwise) and logs that a hybrid CTC/attention
    model streams through its CTC branch only."""
    transducer = getattr(model, "use_transducer_decoder", False)
    method = decoding_method or ("rnnt_greedy" if transducer else CTC_METHODS[0])
    build_search(model, method, 1, beam_size)
    if getattr(model, "decoder", None) is not None and not transducer and method in CTC_METHODS:
        logging.info(
            "streaming: hybrid CTC/attention model: decoding with its CTC branch only (the attention decoder needs "
            "the whole utterance)"
        )
    return method


@torch.no_grad()
def decode_utterance(
    model: torch.nn.Module, method: str, beam_size: int, wave: torch.Tensor, nbest: int = 1
) -> List[Hypothesis]:
    """A whole utterance at once: ``model.encode`` (a causal encoder runs its chunked forward with the decode
    setting: simulated streaming), then the search over all frames. Up to ``nbest`` hypotheses, best first.

    Raises:
        TooShortAudioError: fewer samples than one frame of the front end (as streaming would raise).
    """
    minimum = streaming_features(model).min_samples()
    if wave.numel() < minimum:
        raise TooShortAudioError(f"the utterance has {wave.numel()} samples, fewer than the {minimum} one frame needs")
    device = next(model.parameters()).device
    encoder_out, lengths = model.encode(wave.unsqueeze(0).to(device), torch.tensor([wave.numel()], device=device))
    search = build_search(model, method, 1, beam_size)
    search.advance(encoder_out, lengths)
    return search.nbest(nbest)[0]


class StreamingDecoder:
    """``batch_size`` streams decoded together, chunk by chunk.

    Args:
        model: a streamable ESPnet ASR model in eval mode (see :func:`configure_streaming`, called before).
        decoding_method: see :data:`hybrid_encoders.streaming.decoding.METHODS`.
        batch_size: number of streams.
        beam_size: hypotheses per stream of the beam searches.

    Each :meth:`accept` call takes one piece of audio per stream (possibly empty) and whether the stream ends with
    it; a stream that ended takes no more audio. Hypotheses are in :meth:`nbest` at any time.
    """

    def __init__(self, model: torch.nn.Module, decoding_method: str, batch_size: int = 1, beam_size: int = 4):
        self.model = model
        self.features = [streaming_features(model) for _ in range(batch_size)]
        self.search = build_search(model, decoding_method, batch_size, beam_size)
        self.batch_size = batch_size
        self.states = None
        self.ended = [False] * batch_size
        self.device = next(model.parameters()).device

    @property
    def sample_rate(self) -> int:
        return self.features[0].sample_rate

    @torch.no_grad()
    def accept(
        self, pieces: Sequence[Optional[torch.Tensor]], final: Sequence[bool], sample_rate: Optional[int] = None
    ) -> None:
        """Feed one piece of audio to every stream.

        Args:
            pieces: per stream a (N,) float waveform or None (nothing new).
            final: per stream, True if its audio ends with this piece.
            sample_rate: the pieces' rate in Hz, checked against the model's when given.

        Raises:
            ValueError: audio for a stream that ended, a wrong sample rate or waveform, too short an utterance.
        """
        if len(pieces) != self.batch_size or len(final) != self.batch_size:
            raise ValueError(f"streaming: need {self.batch_size} pieces and final flags, got {len(pieces)}, {len(final)}")
        features = []
        for b, (piece, ends) in enumerate(zip(pieces, final)):
            if self.ended[b]:
                if piece is not None and len(piece):
                    raise ValueError(f"streaming: stream {b} received audio after its end; reset() to start another")
                features.append(torch.zeros(0, self.features[b].dim))
                continue
            frames = [self.features[b].accept_waveform(piece, sample_rate)] if piece is not None else []
            if ends:
                frames.append(self.features[b].finalize())
                self.ended[b] = True
            features.append(torch.cat(frames) if frames else torch.zeros(0, self.features[b].dim))
        lengths = torch.tensor([f.size(0) for f in features])
        if int(lengths.max()) == 0 and not any(final):
            return  # nothing new to encode (a piece shorter than a feature frame)
        xs = torch.nn.utils.rnn.pad_sequence(features, batch_first=True).to(self.device)
        is_final = torch.tensor(self.ended, device=self.device)
        encoder_out, encoder_lengths, self.states = self.model.encoder.forward_streaming(
            xs, lengths.to(self.device), self.states, is_final
        )
        self.search.advance(encoder_out, encoder_lengths)

    def nbest(self, n: int = 1) -> List[List[Hypothesis]]:
        """Up to ``n`` hypotheses per stream, best first (partial before the stream's end)."""
        return self.search.nbest(n)


class TokenText:
    """Token ids -> (tokens, text) as ESPnet's ``Speech2Text`` writes them (its token list and tokenizer).

    Args:
        token_list: the model's token list.
        token_type: ``char``, ``bpe``, ``word``, ... (the training config's); None: no text, tokens only.
        bpemodel: the sentencepiece model for ``bpe``.
    """

    def __init__(self, token_list: Sequence[str], token_type: Optional[str] = None, bpemodel: Optional[str] = None):
        from espnet2.text.build_tokenizer import build_tokenizer
        from espnet2.text.token_id_converter import TokenIDConverter

        self.converter = TokenIDConverter(token_list=list(token_list))
        self.tokenizer = None
        if token_type is not None and (token_type != "bpe" or bpemodel is not None):
            self.tokenizer = build_tokenizer(token_type=token_type, bpemodel=bpemodel)

    @classmethod
    def for_model(
        cls, model: torch.nn.Module, train_args=None, token_type: Optional[str] = None, bpemodel: Optional[str] = None
    ) -> "TokenText":
        """The model's token list; ``token_type`` / ``bpemodel`` default to the training args' (as Speech2Text)."""
        return cls(
            model.token_list,
            token_type or getattr(train_args, "token_type", None),
            bpemodel or getattr(train_args, "bpemodel", None),
        )

    def __call__(self, token_ids: Sequence[int]) -> Tuple[List[str], Optional[str]]:
        tokens = self.converter.ids2tokens([token for token in token_ids if token != 0])
        return tokens, self.tokenizer.tokens2text(tokens) if self.tokenizer is not None else None


def load_model(asr_train_config: str, asr_model_file: str, device: str = "cpu"):
    """(model in eval mode, training args) from an ESPnet experiment's ``config.yaml`` and model file."""
    from espnet2.tasks.asr import ASRTask

    model, train_args = ASRTask.build_model_from_file(asr_train_config, asr_model_file, device)
    return model.eval(), train_args


class Recognizer:
    """Live streaming recognition of one audio stream.

    Args:
        model: a streamable ESPnet ASR model (see the module docstring); put in eval mode.
        decoding_method: ``ctc_greedy``, ``ctc_prefix_beam``, ``rnnt_greedy`` or ``modified_beam_search``; None:
            greedy search over the transducer if the model has one, else over its CTC branch.
        beam_size: hypotheses kept by the beam searches.
        chunk_size, left_context_frames: the encoder's chunking (50 Hz embed frames); None: the model's decode
            setting.
        token_type, bpemodel: how tokens become text (the training config's ``token_type`` / ``bpemodel``); None:
            ``text`` is the tokens joined by spaces.

    Example::

        recognizer = Recognizer.from_config("exp/asr/config.yaml", "exp/asr/valid.loss.ave.pth")
        for samples in microphone_pieces():      # float32 mono at the model's rate
            print(recognizer.accept_waveform(samples))
        print(recognizer.finalize())
        recognizer.reset()
    """

    def __init__(
        self,
        model: torch.nn.Module,
        decoding_method: Optional[str] = None,
        beam_size: int = 4,
        chunk_size: Optional[int] = None,
        left_context_frames: Optional[int] = None,
        token_type: Optional[str] = None,
        bpemodel: Optional[str] = None,
    ):
        self.model = model.eval()
        self.chunk_size, self.left_context_frames = configure_streaming(model, chunk_size, left_context_frames)
        self.decoding_method = choose_method(model, decoding_method, beam_size)
        self.beam_size = beam_size
        self.token_text = TokenText(model.token_list, token_type, bpemodel)
        self.reset()

    @classmethod
    def from_config(cls, config: str, model: str, device: str = "cpu", **options) -> "Recognizer":
        """Load an ESPnet experiment (``config.yaml`` and model file, as ``asr_inference`` takes them).

        Args:
            config: the training ``config.yaml``.
            model: the model file (e.g. ``valid.acc.ave.pth``).
            device: ``cpu`` or ``cuda``.
            **options: the constructor's other arguments; ``token_type`` / ``bpemodel`` default to the config's.
        """
        asr_model, train_args = load_model(config, model, device)
        options.setdefault("token_type", getattr(train_args, "token_type", None))
        options.setdefault("bpemodel", getattr(train_args, "bpemodel", None))
        return cls(asr_model, **options)

    @property
    def sample_rate(self) -> int:
        """The audio rate (Hz) the model takes."""
        return self.decoder.sample_rate

    def reset(self) -> None:
        """Start a new utterance (the model and options stay)."""
        self.decoder = StreamingDecoder(self.model, self.decoding_method, 1, self.beam_size)
        self.finished = False

    def accept_waveform(self, samples, sample_rate: Optional[int] = None) -> str:
        """Feed the next piece of audio; returns the partial text.

        Args:
            samples: (N,) float waveform (numpy array or tensor), mono, at the model's rate, in [-1, 1] for models
                trained on ESPnet's sound files.
            sample_rate: its rate in Hz; given, it must equal :attr:`sample_rate`.

        Raises:
            ValueError: a piece after :meth:`finalize` (call :meth:`reset`), a wrong sample rate, multi-channel audio.
        """
        if self.finished:
            raise ValueError("Recognizer: accept_waveform() after finalize(); call reset() to start a new utterance")
        self.decoder.accept([torch.as_tensor(samples)], [False], sample_rate)
        return self.text

    def finalize(self) -> str:
        """The utterance is over: flush the last frames; returns the final text."""
        if self.finished:
            raise ValueError("Recognizer: finalize() called twice; call reset() to start a new utterance")
        self.decoder.accept([None], [True])
        self.finished = True
        return self.text

    @property
    def hypothesis(self) -> Hypothesis:
        """The current best hypothesis (token ids and score)."""
        return self.decoder.nbest(1)[0][0]

    @property
    def text(self) -> str:
        """The current best hypothesis as text."""
        tokens, text = self.token_text(self.hypothesis.tokens)
        return text if text is not None else " ".join(tokens)
