"""Helpers of the streaming tests: random chunkings and tiny model parts."""

from typing import List

import numpy as np
import pytest
import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder


@pytest.fixture(autouse=True)
def one_thread():
    """Streaming runs many small matrix products: on a loaded machine, torch's thread pool waits for busy cores
    on each (measured 20x slower with 2 threads under load 15). Import this autouse fixture into a test module to
    run its tests with one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_splits(total: int, rng: np.random.Generator, largest: int = 7) -> List[int]:
    """Boundaries 0 = s_0 < s_1 < ... = total of random pieces of 1..largest frames."""
    bounds = [0]
    while bounds[-1] < total:
        bounds.append(min(total, bounds[-1] + int(rng.integers(1, largest + 1))))
    return bounds


def advance_in_pieces(search, encoder_out: torch.Tensor, lengths: torch.Tensor, bounds: List[int]):
    """Feed ``encoder_out`` (B, T, D) to ``search`` piece by piece; per stream a piece holds its valid frames only."""
    for start, stop in zip(bounds[:-1], bounds[1:]):
        piece_lengths = (lengths - start).clamp(min=0, max=stop - start)
        search.advance(encoder_out[:, start:stop], piece_lengths)
    return search


def peaky_encoder_out(batch: int, frames: int, dim: int, seed: int) -> torch.Tensor:
    """Random encoder frames, scaled so that the posteriors of a random output layer are far from uniform."""
    return torch.randn(batch, frames, dim, generator=torch.Generator().manual_seed(seed)) * 3.0


class StandInCausalEncoder(AbsEncoder):
    """A tiny causal encoder with the streaming Zipformer's interface, for tests of what is built on it.

    Output frame k (4x subsampling) = tanh(W mean(x[4k : 4k + 4]) + U y[k - 1]): causal, stateful across chunks.
    ``forward`` on a whole utterance and ``forward_streaming`` on pieces of any sizes give the same frames.
    """

    def __init__(self, input_size: int = 80, output_size: int = 16, causal: bool = True, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.project = torch.nn.Linear(input_size, output_size)
        self.recur = torch.nn.Linear(output_size, output_size, bias=False)
        self.config = {
            "causal": causal, "chunk_size": [16, 32], "left_context_frames": [64],
            "decode_chunk_size": None, "decode_left_context_frames": None,
        }
        self.size = output_size

    def output_size(self) -> int:
        return self.size

    def set_streaming(self, chunk_size: int, left_context_frames: int) -> None:
        self.config["decode_chunk_size"], self.config["decode_left_context_frames"] = chunk_size, left_context_frames

    def _run(self, frames: torch.Tensor, last: torch.Tensor):
        """(N*4, D) frames, (H,) previous output -> (N, H) outputs."""
        outputs = []
        for group in frames.reshape(-1, 4, frames.size(-1)):
            last = torch.tanh(self.project(group.mean(0)) + self.recur(last))
            outputs.append(last)
        return (torch.stack(outputs) if outputs else frames.new_zeros(0, self.size)), last

    def forward(self, xs_pad, ilens, prev_states=None):
        outputs = [self._run(x[: (int(n) // 4) * 4], xs_pad.new_zeros(self.size))[0] for x, n in zip(xs_pad, ilens)]
        return torch.nn.utils.rnn.pad_sequence(outputs, batch_first=True), ilens // 4, None

    def forward_streaming(self, xs, ilens, states=None, is_final=False):
        if states is None:
            states = [(xs.new_zeros(0, xs.size(-1)), xs.new_zeros(self.size)) for _ in range(xs.size(0))]
        outputs, new_states = [], []
        for (pending, last), x, n in zip(states, xs, ilens):
            pending = torch.cat((pending, x[: int(n)]))
            usable = (pending.size(0) // 4) * 4
            out, last = self._run(pending[:usable], last)
            outputs.append(out)
            new_states.append((pending[usable:], last))
        olens = torch.tensor([o.size(0) for o in outputs])
        return torch.nn.utils.rnn.pad_sequence(outputs, batch_first=True), olens, new_states
