"""Data augmentation registered into ESPnet's ``specaug`` choices (``specaug: adaptive_specaug``)."""
