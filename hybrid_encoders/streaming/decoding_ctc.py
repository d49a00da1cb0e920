"""CTC searches that advance chunk by chunk: greedy and prefix beam search.

Both read the frame log-posteriors of ESPnet's ``CTC`` module (``ctc.log_softmax(encoder_out)``), frame by frame.

Prefix beam search (Hannun et al., "First-pass large vocabulary continuous speech recognition using bi-directional
recurrent DNNs", 2014, Algorithm 1) keeps, for each prefix ``l`` in the beam, the log-probabilities of all
alignments of the frames so far that collapse to ``l`` and end in a blank (``p_b``) or in ``l``'s last token
(``p_nb``). A frame with posteriors ``p`` extends them:

* blank: ``p_b(l) += (p_b(l) + p_nb(l)) * p(blank)``;
* ``l``'s last token ``c`` again: ``p_nb(l) += p_nb(l) * p(c)`` (a repeat collapses) and
  ``p_nb(l + c) += p_b(l) * p(c)`` (a blank separates two ``c``);
* another token ``c``: ``p_nb(l + c) += (p_b(l) + p_nb(l)) * p(c)``;

then the ``beam_size`` prefixes with the largest ``p_b + p_nb`` stay. Only the ``beam_size`` most likely tokens of
each frame extend prefixes (WeNet's pruning); with ``beam_size`` >= vocabulary nothing is pruned in a frame and
the scores are the exact prefix probabilities while all prefixes fit the beam (tested against enumeration of all
alignments). Sums are in log space, in float64.
"""

import math
from typing import Dict, List, Tuple

import torch

from hybrid_encoders.streaming.decoding import Hypothesis, StreamingSearch, per_frame

NEG_INF = float("-inf")


def _log_add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for floats, -inf aware."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    high, low = (a, b) if a > b else (b, a)
    return high + math.log1p(math.exp(low - high))


class CtcGreedySearch(StreamingSearch):
    """Best token per frame; repeats collapse and blanks are removed, also across chunk boundaries.

    Args:
        ctc: ESPnet's ``CTC`` module (``log_softmax((B, T, D)) -> (B, T, V)``).
        batch_size: number of streams.
        blank_id: the blank token's id.

    The score is the log-probability of the best path (the sum of each frame's largest log-posterior).
    """

    def __init__(self, ctc: torch.nn.Module, batch_size: int, blank_id: int = 0):
        super().__init__(batch_size)
        self.ctc = ctc
        self.blank_id = blank_id
        self.tokens: List[List[int]] = [[] for _ in range(batch_size)]
        self.scores = [0.0] * batch_size
        self.last = [blank_id] * batch_size  # the previous frame's best token (a blank lets a repeat through)

    def _advance(self, encoder_out: torch.Tensor, lengths: torch.Tensor) -> None:
        best_logp, best = per_frame(self.ctc.log_softmax, encoder_out).max(dim=-1)  # (B, T) each
        for b, length in enumerate(lengths.tolist()):
            for token, logp in zip(best[b, :length].tolist(), best_logp[b, :length].double().tolist()):
                if token != self.blank_id and token != self.last[b]:
                    self.tokens[b].append(token)
                self.last[b] = token
                self.scores[b] += logp

    def nbest(self, n: int = 1) -> List[List[Hypothesis]]:
        return [[Hypothesis(tuple(tokens), score)] for tokens, score in zip(self.tokens, self.scores)]


class CtcPrefixBeamSearch(StreamingSearch):
    """CTC prefix beam search (see the module docstring), one beam per stream.

    Args:
        ctc: ESPnet's ``CTC`` module.
        batch_size: number of streams.
        blank_id: the blank token's id.
        beam_size: prefixes kept per stream, and tokens tried per frame.

    The score of a prefix is ``log(p_b + p_nb)``: the log-probability of all its alignments kept in the beam.
    Ties are broken by the token sequence, so the result does not depend on dictionary order.
    """

    def __init__(self, ctc: torch.nn.Module, batch_size: int, blank_id: int, beam_size: int):
        super().__init__(batch_size)
        self.ctc = ctc
        self.blank_id = blank_id
        self.beam_size = beam_size
        # per stream: prefix -> (log p_b, log p_nb); the empty prefix before any frame has p_b = 1
        self.beams: List[Dict[Tuple[int, ...], Tuple[float, float]]] = [{(): (0.0, NEG_INF)} for _ in range(batch_size)]

    def _advance(self, encoder_out: torch.Tensor, lengths: torch.Tensor) -> None:
        log_probs = per_frame(self.ctc.log_softmax, encoder_out).double()  # (B, T, V)
        candidates = min(self.beam_size, log_probs.size(-1))
        top_logp, top_tokens = log_probs.topk(candidates, dim=-1)  # (B, T, K)
        for b, length in enumerate(lengths.tolist()):
            for t in range(length):
                self.beams[b] = self._step(self.beams[b], top_tokens[b, t].tolist(), top_logp[b, t].tolist())

    def _step(
        self, beam: Dict[Tuple[int, ...], Tuple[float, float]], tokens: List[int], logps: List[float]
    ) -> Dict[Tuple[int, ...], Tuple[float, float]]:
        """One frame: extend every prefix by the frame's candidate tokens, then prune to the beam."""
        extended: Dict[Tuple[int, ...], List[float]] = {}

        def entry(prefix):
            return extended.setdefault(prefix, [NEG_INF, NEG_INF])

        for prefix, (p_b, p_nb) in beam.items():
            total = _log_add(p_b, p_nb)
            for token, logp in zip(tokens, logps):
                if token == self.blank_id:
                    same = entry(prefix)
                    same[0] = _log_add(same[0], total + logp)
                elif prefix and token == prefix[-1]:
                    same = entry(prefix)
                    same[1] = _log_add(same[1], p_nb + logp)
                    longer = entry(prefix + (token,))
                    longer[1] = _log_add(longer[1], p_b + logp)
                else:
                    longer = entry(prefix + (token,))
                    longer[1] = _log_add(longer[1], total + logp)
        # a prefix reached only from p_b = -inf (no alignment yet ends in a blank) is impossible: drop it
        possible = [item for item in extended.items() if _log_add(*item[1]) > NEG_INF]
        ranked = sorted(possible, key=lambda item: (-_log_add(*item[1]), item[0]))
        return {prefix: (p_b, p_nb) for prefix, (p_b, p_nb) in ranked[: self.beam_size]}

    def nbest(self, n: int = 1) -> List[List[Hypothesis]]:
        results = []
        for beam in self.beams:
            ranked = sorted(beam.items(), key=lambda item: (-_log_add(*item[1]), item[0]))
            results.append([Hypothesis(prefix, _log_add(*scores)) for prefix, scores in ranked[:n]])
        return results
