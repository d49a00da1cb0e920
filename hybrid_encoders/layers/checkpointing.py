"""Activation checkpointing that replays every random draw: the encoders' opt-in ``activation_checkpointing``.

A checkpointed call keeps only its inputs for the backward pass and runs the forward again when the backward pass
reaches it (``torch.utils.checkpoint`` without re-entrancy), trading one more forward of the block for its
activations. The second forward must compute exactly what the first did, yet the blocks draw random numbers while
training: dropout masks and per-sequence skips from torch's generator, and Zipformer's gradient regularisers
(Balancer, Whiten, the attention penalty, layer drop decisions) from Python's ``random``. So the recomputation

* restores torch's CPU and device generators (``preserve_rng_state``), and
* restores Python's ``random`` state as it was before the first forward, then puts back the state it found, so the
  draws made by the rest of the training step are not disturbed.

Training-step counters (``batch_count``) are advanced by the encoder's ``forward``, outside every checkpointed
block, so a recomputation never counts a step. Gradients are those of the plain run (tested).
"""

import random
from typing import Any, Callable

import torch
from torch.utils.checkpoint import checkpoint as torch_checkpoint


def checkpointed(function: Callable[..., Any], *args: Any, enabled: bool = True) -> Any:
    """``function(*args)``, with its activations recomputed in the backward pass when ``enabled``.

    Without a gradient to compute (inference, ``torch.no_grad``) or with ``enabled=False`` it is a plain call.

    Args:
        function: a block, e.g. a layer module; it may draw from torch's generators and from ``random``.
        args: its positional arguments (tensors and anything else).
        enabled: checkpoint this call.
    """
    if not enabled or not torch.is_grad_enabled():
        return function(*args)
    python_state = random.getstate()
    calls = 0

    def replaying(*inputs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:  # the forward pass
            return function(*inputs)
        found = random.getstate()  # a recomputation, inside the backward pass
        random.setstate(python_state)
        try:
            return function(*inputs)
        finally:
            random.setstate(found)

    return torch_checkpoint(replaying, *args, use_reentrant=False, preserve_rng_state=True)
