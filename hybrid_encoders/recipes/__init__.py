"""Data preparation, scoring and reporting used by the recipes under ``egs/``.

The modules need the ``recipes`` extra (``pip install hybrid-encoders[recipes]``): sentencepiece, lhotse, jiwer,
espeakng-loader, soundfile and matplotlib.
"""
