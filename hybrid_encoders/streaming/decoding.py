"""Searches that advance chunk by chunk, and the choice of one for an ESPnet ASR model.

Every search decodes ``B`` streams at once. :meth:`StreamingSearch.advance` consumes the encoder frames a chunk
produced, ``(B, T, D)`` with ``lengths (B,)`` valid frames per stream (0 for a stream that produced none); the
hypotheses can be read at any time (partial results) and are final after the last frames. A search keeps per frame
exactly the state an offline search over the whole encoder output keeps, so splitting the frames into chunks of any
sizes gives the same hypotheses and scores (``tests/streaming/test_decoding*.py``).

=========================  ============================  ====================================================
``--decoding_method``      model                         search
=========================  ============================  ====================================================
``ctc_greedy``             any with a CTC branch          best token per frame, repeats then blanks removed
``ctc_prefix_beam``        any with a CTC branch          CTC prefix beam search (:mod:`.decoding_ctc`)
``rnnt_greedy``            ``model: espnet_rnnt``         transducer greedy search, <= 1 symbol per frame
``modified_beam_search``   ``model: espnet_rnnt``         icefall's modified beam search (:mod:`.decoding_transducer`)
=========================  ============================  ====================================================

A hybrid CTC/attention model (``model: espnet`` with ``ctc_weight`` < 1) streams through its CTC branch only: the
attention decoder attends over the whole utterance, so it has no chunk-by-chunk form. Neither search fuses a
language model.
"""

from dataclasses import dataclass
from typing import Callable, List, Tuple

import torch

CTC_METHODS = ("ctc_greedy", "ctc_prefix_beam")
TRANSDUCER_METHODS = ("rnnt_greedy", "modified_beam_search")
METHODS = CTC_METHODS + TRANSDUCER_METHODS


@dataclass
class Hypothesis:
    """A decoding result.

    Attributes:
        tokens: token ids, blanks and the transducer's start symbol excluded.
        score: log-probability: of the best alignment (greedy searches), of all alignments of ``tokens`` that
            survived the beam (beam searches).
    """

    tokens: Tuple[int, ...]
    score: float


def per_frame(function: Callable[[torch.Tensor], torch.Tensor], encoder_out: torch.Tensor) -> torch.Tensor:
    """``function`` applied to each frame ``(B, 1, D)`` of ``encoder_out (B, T, D)``, concatenated over time.

    A matrix product rounds differently with its number of rows, so projecting a whole chunk at once would make the
    scores depend (in the last bits) on how the frames were grouped into chunks; frame by frame they do not.
    """
    return torch.cat([function(encoder_out[:, t : t + 1]) for t in range(encoder_out.size(1))], dim=1)


class StreamingSearch:
    """Base class: ``B`` streams decoded frame-synchronously; subclasses keep the per-stream state.

    Args:
        batch_size: number of streams ``B``.
    """

    def __init__(self, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"streaming search: batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    @torch.no_grad()
    def advance(self, encoder_out: torch.Tensor, lengths: torch.Tensor) -> None:
        """Consume the next encoder frames of every stream.

        Args:
            encoder_out: (B, T, D) encoder output of this chunk, padded.
            lengths: (B,) valid frames per stream, 0 <= lengths <= T.
        """
        if encoder_out.dim() != 3 or encoder_out.size(0) != self.batch_size:
            raise ValueError(
                f"streaming search: encoder_out must be ({self.batch_size}, T, D), got {tuple(encoder_out.shape)}"
            )
        if lengths.shape != (self.batch_size,) or (lengths.numel() and int(lengths.max()) > encoder_out.size(1)):
            raise ValueError(
                f"streaming search: lengths must be ({self.batch_size},) values <= {encoder_out.size(1)}, got "
                f"{lengths.tolist()}"
            )
        if encoder_out.size(1) > 0:
            self._advance(encoder_out, lengths.to(torch.long).cpu())

    def _advance(self, encoder_out: torch.Tensor, lengths: torch.Tensor) -> None:
        raise NotImplementedError

    def nbest(self, n: int = 1) -> List[List[Hypothesis]]:
        """Up to ``n`` hypotheses per stream, best first (a greedy search has one)."""
        raise NotImplementedError

    def best(self) -> List[Hypothesis]:
        """The best hypothesis of each stream so far."""
        return [hyps[0] for hyps in self.nbest(1)]


def build_search(model: torch.nn.Module, method: str, batch_size: int, beam_size: int = 4) -> StreamingSearch:
    """The search ``method`` over ``model``'s CTC branch or transducer decoder + joint network.

    Args:
        model: an ``ESPnetASRModel`` (``model: espnet``) or our ``TransducerASRModel`` (``model: espnet_rnnt``).
        method: one of :data:`METHODS`.
        batch_size: number of streams.
        beam_size: hypotheses kept per stream by the beam searches.

    Raises:
        ValueError: an unknown method, or one the model has no branch for (naming what is missing).
    """
    from hybrid_encoders.streaming.decoding_ctc import CtcGreedySearch, CtcPrefixBeamSearch
    from hybrid_encoders.streaming.decoding_transducer import ModifiedBeamSearch, TransducerGreedySearch

    if method not in METHODS:
        raise ValueError(f"--decoding_method must be one of {list(METHODS)}, got {method!r}")
    if beam_size < 1:
        raise ValueError(f"--beam_size must be >= 1, got {beam_size}")
    if method in CTC_METHODS:
        if getattr(model, "ctc", None) is None:
            raise ValueError(
                f"--decoding_method {method}: the model has no CTC branch (trained with ctc_weight 0); use "
                f"{' or '.join(TRANSDUCER_METHODS)} for a transducer"
            )
        if method == "ctc_greedy":
            return CtcGreedySearch(model.ctc, batch_size, model.blank_id)
        return CtcPrefixBeamSearch(model.ctc, batch_size, model.blank_id, beam_size)
    if getattr(model, "joint_network", None) is None or not getattr(model, "use_transducer_decoder", False):
        raise ValueError(
            f"--decoding_method {method} needs a transducer (model: espnet_rnnt); this model has none, use "
            f"{' or '.join(CTC_METHODS)}"
        )
    if method == "rnnt_greedy":
        return TransducerGreedySearch(model.decoder, model.joint_network, batch_size)
    return ModifiedBeamSearch(model.decoder, model.joint_network, batch_size, beam_size)
