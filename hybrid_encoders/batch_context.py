"""The utterance ids of the batch ESPnet's trainer is running, for error messages raised deep inside a model.

ESPnet's trainer passes ``utt_id`` to the model's ``forward`` as a keyword argument (``batch["utt_id"] = utt_id`` in
the training and validation loops of ``espnet2/train/trainer.py``; ``ESPnetASRModel.forward`` documents it: "kwargs:
utt_id is among the input"), but ``ESPnetASRModel.encode`` calls the encoder with features and lengths only. Rather
than editing or monkeypatching ESPnet, an encoder that must name the utterances of a failing batch looks them up, on
its error path only, in the frames of its callers (:func:`find_batch_context`).

Why that is safe: it only reads, it only runs when an exception is about to be raised anyway, and it never guesses.
Ids are used only from the nearest caller holding a list of exactly one string per batch item (a ``DataParallel``
replica, which is handed the whole list, gets none); outside ESPnet's trainer (inference, direct calls) nothing is
found and the message names batch indices instead.
"""

import sys
from dataclasses import dataclass
from typing import Any, List, Optional

import torch

MAX_DEPTH = 40  # caller frames searched: ESPnet's trainer -> model.forward -> encode -> encoder is about ten deep


@dataclass
class BatchContext:
    """What the model's ``forward`` received about the current batch.

    Attributes:
        utt_ids: one utterance id per batch item, in batch order.
        speech_lengths: (B,) input lengths the model's ``forward`` received (samples for raw audio), or None.
        sample_rate: the frontend's sampling rate in Hz, or None when the frontend does not say.
    """

    utt_ids: List[str]
    speech_lengths: Optional[torch.Tensor]
    sample_rate: Optional[int]


def find_batch_context(batch_size: int) -> Optional[BatchContext]:
    """Search the caller frames for the ``utt_id`` list of this batch (see the module docstring).

    Args:
        batch_size: B; a list of another length is ignored.

    Returns:
        The context of the nearest matching caller, or None.
    """
    frame = sys._getframe(1)
    try:
        for _ in range(MAX_DEPTH):
            if frame is None:
                return None
            local = frame.f_locals
            kwargs = local.get("kwargs")
            utt_ids = kwargs.get("utt_id") if isinstance(kwargs, dict) else None
            if utt_ids is None:
                utt_ids = local.get("utt_id")
            if _is_id_list(utt_ids, batch_size):
                lengths = local.get("speech_lengths")
                if not (isinstance(lengths, torch.Tensor) and lengths.shape == (batch_size,)):
                    lengths = None
                return BatchContext(list(utt_ids), lengths, _sample_rate(getattr(local.get("self"), "frontend", None)))
            frame = frame.f_back
        return None
    finally:
        del frame  # no reference cycle through the frames


def _is_id_list(value: Any, batch_size: int) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == batch_size
        and all(isinstance(item, str) for item in value)
    )


def _sample_rate(frontend: Any) -> Optional[int]:
    """``fs`` of our frontends, or the mel filterbank's ``sr`` of ESPnet's ``DefaultFrontend``."""
    rate = getattr(frontend, "fs", None)
    if rate is None:
        rate = getattr(getattr(frontend, "logmel", None), "mel_options", {}).get("sr")
    return int(rate) if isinstance(rate, (int, float)) and rate > 0 else None
