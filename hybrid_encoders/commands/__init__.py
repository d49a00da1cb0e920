"""Sub-commands of ``hybrid-encoders``: one module each (see :mod:`hybrid_encoders.cli`)."""
