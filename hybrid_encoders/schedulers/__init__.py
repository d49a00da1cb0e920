"""Learning-rate schedulers registered into ESPnet (``scheduler: eden | eden2 | noam_hold_annealing``)."""
