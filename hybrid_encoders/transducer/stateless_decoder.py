"""Stateless transducer prediction network (``decoder: stateless_transducer``).

Ghodsi et al., "RNN-transducer with stateless prediction network" (ICASSP 2020) replace the prediction network's
LSTM by an embedding of the last label; icefall's Zipformer recipes add a grouped 1-D convolution over the last
``context_size`` label embeddings followed by ReLU. Positions before the start of the sequence contribute zero
vectors, in training and in decoding alike, so both see the same input.

The decoder speaks ESPnet's transducer decoder API (``forward(labels)``, ``dunits``, ``odim``, ``blank_id``,
``set_device``, ``init_state``, ``score``, ``batch_score``, ``select_state``, ``create_batch_states``), so the
unmodified ``BeamSearchTransducer`` and ``ErrorCalculatorTransducer`` drive it. Its "state" is literally the label
context: a (N, context_size) int64 tensor holding the last ``context_size`` labels consumed (-1 before the start).

ESPnet builds a joint network only for ``decoder: transducer``; with this decoder ``model: espnet_rnnt`` builds its
own from ``model_conf: {joint_net_conf: {...}}`` (see :mod:`hybrid_encoders.transducer.model`).

Parameter names (``embedding.weight``, ``conv.weight``) are icefall's, so its checkpoints map one to one. icefall's
training-only activation balancers are not part of this module.
"""

from typing import Any, Dict, List, Optional, Tuple

import torch
from typeguard import typechecked

from espnet2.asr.decoder.abs_decoder import AbsDecoder

BEFORE_START = -1  # context entry before the first label: embeds to a zero vector


class StatelessTransducerDecoder(AbsDecoder):
    """Embedding + grouped Conv1d over the last ``context_size`` labels + ReLU.

    Args:
        vocab_size: number of output tokens including blank (passed by ESPnet).
        encoder_output_size: passed by ESPnet to every non-RNN-T decoder; the prediction network does not read the
            encoder, so the value is not used.
        decoder_dim: embedding and output size (``dunits``). Default 512 (icefall's Zipformer).
        context_size: labels of history, >= 1; 1 is a bigram (embedding only, no convolution). Default 2.
        conv_group_size: channels per convolution group; ``decoder_dim`` must be divisible by it. Default 4
            (icefall's ``groups = decoder_dim // 4``).
        blank_id: the blank token id, also the first label of every sequence. Default 0 (ESPnet's ``<blank>``).
    """

    @typechecked
    def __init__(
        self,
        vocab_size: int,
        encoder_output_size: Optional[int] = None,
        decoder_dim: int = 512,
        context_size: int = 2,
        conv_group_size: int = 4,
        blank_id: int = 0,
    ):
        super().__init__()
        name = "stateless_transducer decoder"
        if decoder_dim < 1:
            raise ValueError(f"{name}: decoder_dim must be >= 1, got {decoder_dim}")
        if context_size < 1:
            raise ValueError(f"{name}: context_size must be >= 1, got {context_size}")
        if conv_group_size < 1 or decoder_dim % conv_group_size != 0:
            raise ValueError(f"{name}: decoder_dim={decoder_dim} must be divisible by conv_group_size={conv_group_size}")
        if not 0 <= blank_id < vocab_size:
            raise ValueError(f"{name}: blank_id={blank_id} must lie in [0, vocab_size={vocab_size})")
        self.embedding = torch.nn.Embedding(vocab_size, decoder_dim)
        self.conv = (
            torch.nn.Conv1d(
                decoder_dim, decoder_dim, kernel_size=context_size, groups=decoder_dim // conv_group_size, bias=False
            )
            if context_size > 1
            else None
        )
        self.context_size = context_size
        self.dunits = decoder_dim
        self.odim = vocab_size
        self.blank_id = blank_id
        self.device = self.embedding.weight.device

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L + context_size - 1) labels, -1 = before the start -> (N, L, decoder_dim)."""
        embedded = self.embedding(tokens.clamp(min=0)) * (tokens >= 0).unsqueeze(2).to(self.embedding.weight.dtype)
        if self.conv is None:
            return embedded
        return torch.relu(self.conv(embedded.transpose(1, 2))).transpose(1, 2)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """Decoder outputs for every prefix of the blank-prefixed label sequences (ESPnet's training call).

        Args:
            labels: (B, U+1) label ids, ``labels[:, 0]`` the blank/start symbol.

        Returns:
            (B, U+1, decoder_dim); output u depends on ``labels[:, u - context_size + 1 : u + 1]``.
        """
        history = labels.new_full((labels.size(0), self.context_size - 1), BEFORE_START)
        return self._decode(torch.cat((history, labels), dim=1))

    def set_device(self, device: torch.device):
        """Device for the tensors the search API creates."""
        self.device = device

    def init_state(self, batch_size: int) -> torch.Tensor:
        """(batch_size, context_size) contexts before any label: all -1."""
        return torch.full((batch_size, self.context_size), BEFORE_START, dtype=torch.long, device=self.device)

    def _advance(self, states: torch.Tensor, last_labels: List[int]) -> torch.Tensor:
        """Contexts (N, context_size) after consuming ``last_labels`` (N labels)."""
        last = torch.tensor(last_labels, dtype=torch.long, device=states.device).unsqueeze(1)
        return torch.cat((states[:, 1:], last), dim=1)

    def score(self, hyp, cache: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step for one hypothesis: consume ``hyp.yseq[-1]`` in the context ``hyp.dec_state``.

        Args:
            hyp: an ESPnet ``Hypothesis``; ``hyp.dec_state`` is the (1, context_size) context before its last label.
            cache: ``{"_".join(yseq): (dec_out (1, D), state)}``, shared across calls of one search.

        Returns:
            dec_out (decoder_dim,), new state (1, context_size), label (1,) for an LM.
        """
        key = "_".join(map(str, hyp.yseq))
        if key not in cache:
            state = self._advance(hyp.dec_state, [hyp.yseq[-1]])
            cache[key] = (self._decode(state)[:, 0], state)
        dec_out, state = cache[key]
        return dec_out[0], state, torch.full((1,), hyp.yseq[-1], dtype=torch.long, device=self.device)

    def batch_score(
        self, hyps: List[Any], dec_states: torch.Tensor, cache: Dict[str, Any], use_lm: bool
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """:meth:`score` for N hypotheses at once (uncached ones in one convolution).

        Args:
            hyps: N hypotheses; their ``dec_state`` holds the context before their last label.
            dec_states: the search's batch state (the per-hypothesis states are authoritative, as in ESPnet's
                RNN decoder).
            cache: as in :meth:`score`.
            use_lm: also return the last labels for an LM.

        Returns:
            dec_out (N, decoder_dim), states (N, context_size), LM labels (N, 1) or None.
        """
        keys = ["_".join(map(str, hyp.yseq)) for hyp in hyps]
        pending = [i for i, key in enumerate(keys) if key not in cache]
        if pending:
            states = self._advance(
                torch.cat([hyps[i].dec_state for i in pending], dim=0), [hyps[i].yseq[-1] for i in pending]
            )
            outputs = self._decode(states)[:, 0]
            for row, i in enumerate(pending):
                cache[keys[i]] = (outputs[row : row + 1], states[row : row + 1])
        dec_out = torch.cat([cache[key][0] for key in keys], dim=0)
        new_states = torch.cat([cache[key][1] for key in keys], dim=0)
        if not use_lm:
            return dec_out, new_states, None
        labels = torch.tensor([hyp.yseq[-1] for hyp in hyps], dtype=torch.long, device=self.device).unsqueeze(1)
        return dec_out, new_states, labels

    def select_state(self, states: torch.Tensor, idx: int) -> torch.Tensor:
        """The (1, context_size) state of hypothesis ``idx``."""
        return states[idx : idx + 1]

    def create_batch_states(
        self, states: torch.Tensor, new_states: List[torch.Tensor], check_list: Optional[List] = None
    ) -> torch.Tensor:
        """Stack per-hypothesis states (each (1, context_size)) into (N, context_size)."""
        return torch.cat(new_states, dim=0)
