"""Command-line entry points run as ``python -m hybrid_encoders.bin.<name>``, in ESPnet's ``espnet2.bin`` style:

* :mod:`~hybrid_encoders.bin.asr_inference_streaming`: chunk-by-chunk decoding of models with a causal encoder.
"""
