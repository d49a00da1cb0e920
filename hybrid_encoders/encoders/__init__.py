"""ESPnet encoders: Squeezeformer, HybridFormer, Zipformer; see docs/architecture.md."""
