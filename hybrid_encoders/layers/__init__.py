"""Building blocks shared by the encoders; see docs/architecture.md."""
