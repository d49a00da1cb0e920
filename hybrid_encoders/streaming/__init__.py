"""Streaming: chunked causal processing and chunk-by-chunk inference with cached state.

* :mod:`hybrid_encoders.streaming.chunking`: chunk masks and chunk-setting checks (also used by full forwards).
* :mod:`hybrid_encoders.streaming.zipformer_state`: the state a streaming Zipformer carries between calls.
* :mod:`hybrid_encoders.streaming.zipformer_stream`: ``ZipformerEncoder.forward_streaming``'s machinery.
* :mod:`hybrid_encoders.streaming.frontend`: the model's front end and ``global_mvn`` fed audio in pieces.
* :mod:`hybrid_encoders.streaming.decoding` (``_ctc``, ``_transducer``): searches that advance chunk by chunk.
* :mod:`hybrid_encoders.streaming.recognizer`: audio -> text, :class:`Recognizer` for live use (one stream) and
  ``StreamingDecoder`` for batches (``python -m hybrid_encoders.bin.asr_inference_streaming``).
"""


def __getattr__(name: str):
    # ``hybrid_encoders.streaming.Recognizer`` without importing ESPnet when the encoder imports ``.chunking``
    if name == "Recognizer":
        from hybrid_encoders.streaming.recognizer import Recognizer

        return Recognizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
