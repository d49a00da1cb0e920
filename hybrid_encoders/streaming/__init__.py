"""Streaming: chunked causal processing and chunk-by-chunk inference with cached state.

* :mod:`hybrid_encoders.streaming.chunking`: chunk masks and chunk-setting checks (also used by full forwards).
* :mod:`hybrid_encoders.streaming.zipformer_state`: the state a streaming Zipformer carries between calls.
* :mod:`hybrid_encoders.streaming.zipformer_stream`: ``ZipformerEncoder.forward_streaming``'s machinery.
"""
