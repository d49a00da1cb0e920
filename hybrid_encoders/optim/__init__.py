"""Optimizers registered into ESPnet (``optim: scaled_adam``); see docs/scaled_adam_eden.md."""
