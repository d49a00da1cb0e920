"""Benchmark harness (``hybrid-encoders bench``): :mod:`.harness` measures, :mod:`.models` is the encoder
catalogue, :mod:`.report` writes JSON, Markdown and plots."""
