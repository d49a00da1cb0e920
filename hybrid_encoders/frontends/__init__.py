"""ESPnet frontends: waveform -> features (the Kaldi-compatible fbank that icefall-trained encoders expect)."""
