"""Tensors derived from parameters, kept between inference calls until the parameters change.

A streaming chunk has a few frames, so per-call work that only depends on the weights (a folded bias, a scale table)
can cost as much as the chunk's own arithmetic. Without autograd such a tensor is computed once and kept on its
module, keyed by the parameters' storage and version counters: in-place updates (optimizer steps, ``load_state_dict``,
``nn.init``) bump the versions and ``.to()`` replaces the storage, so a stale value is never used. Writes through
``parameter.data`` bypass the version counter; nothing here makes them.
"""

from typing import Callable, Sequence

import torch
from torch import nn


def cached_until_changed(
    module: nn.Module, name: str, parameters: Sequence[torch.Tensor], compute: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """``compute()``, reused from ``module`` (attribute ``name``) while ``parameters`` are unchanged.

    With autograd on, while tracing or compiling, ``compute()`` is called every time (the graph must contain it).
    """
    if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return compute()
    key = tuple((parameter.data_ptr(), parameter._version) for parameter in parameters)
    cached = module.__dict__.get(name)  # a plain attribute: neither a buffer nor in the state dict
    if cached is None or cached[0] != key:
        cached = (key, compute())
        module.__dict__[name] = cached
    return cached[1]
