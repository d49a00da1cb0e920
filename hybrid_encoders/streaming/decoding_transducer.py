"""Transducer searches that advance chunk by chunk over the stateless decoder and the joint network.

Both emit at most one symbol per encoder frame, as icefall's streaming searches do (``max_sym_per_frame = 1``): a
frame either emits a token (the decoder then moves on) or a blank (the search moves to the next frame). The
joint network is ESPnet's ``JointNetwork``: ``lin_out(act(lin_enc(enc) + lin_dec(dec)))``; the two input
projections are computed once per frame and once per decoder context, and combined with ``no_projection=True``.

* :class:`TransducerGreedySearch`: the most likely symbol per frame, all streams in one joint call per frame.
  Its tokens equal ESPnet's ``BeamSearchTransducer`` with ``beam_size: 1``; its score also counts the blanks.
* :class:`ModifiedBeamSearch`: icefall's "modified beam search". Per frame, every hypothesis is extended by every
  symbol (blank keeps it as it is), the ``beam_size`` best (hypothesis, symbol) pairs of each stream survive, and
  pairs that give the same token sequence are merged by adding their probabilities. The hypotheses of all streams
  go through the joint network together.

The decoder's state is its label context, so a hypothesis needs only its tokens (icefall's ``ys``) and a cached
projected decoder output.
"""

from typing import List, Tuple

import torch

from hybrid_encoders.streaming.decoding import Hypothesis, StreamingSearch, per_frame
from hybrid_encoders.transducer.stateless_decoder import BEFORE_START, StatelessTransducerDecoder


class _TransducerSearch(StreamingSearch):
    """What both searches share: the decoder/joint network checks and projections."""

    def __init__(self, decoder: torch.nn.Module, joint_network: torch.nn.Module, batch_size: int):
        super().__init__(batch_size)
        if not isinstance(decoder, StatelessTransducerDecoder):
            raise ValueError(
                f"streaming transducer search: decoder {type(decoder).__name__} is not supported; it needs "
                "decoder: stateless_transducer"
            )
        self.decoder = decoder
        self.joint_network = joint_network
        self.blank_id = decoder.blank_id
        self.context_size = decoder.context_size

    def _contexts(self, histories: List[Tuple[int, ...]]) -> torch.Tensor:
        """(N, context_size) decoder inputs: the start blank, then the tokens, left-padded with 'before start'."""
        rows = []
        for tokens in histories:
            context = ((BEFORE_START,) * self.context_size + (self.blank_id,) + tuple(tokens))[-self.context_size :]
            rows.append(context)
        return torch.tensor(rows, dtype=torch.long, device=self.joint_network.lin_dec.weight.device)

    def _decoder_projection(self, histories: List[Tuple[int, ...]]) -> torch.Tensor:
        """(N, joint_space) ``lin_dec`` of the decoder output after each token history."""
        decoder_out = self.decoder(self._contexts(histories))[:, -1]
        return self.joint_network.lin_dec(decoder_out)

    def _log_probs(self, encoder_projected: torch.Tensor, decoder_projected: torch.Tensor) -> torch.Tensor:
        """(N, V) log-probabilities from (N, joint_space) projections."""
        logits = self.joint_network(encoder_projected, decoder_projected, no_projection=True)
        return torch.log_softmax(logits, dim=-1)


class TransducerGreedySearch(_TransducerSearch):
    """Greedy search, at most one symbol per frame, batched over streams.

    Args:
        decoder: the model's ``StatelessTransducerDecoder``.
        joint_network: the model's ``JointNetwork``.
        batch_size: number of streams.

    The score is the log-probability of the greedy alignment: the chosen symbol's log-probability summed over
    frames, blanks included (ESPnet's greedy search adds only the emitted tokens').
    """

    def __init__(self, decoder: torch.nn.Module, joint_network: torch.nn.Module, batch_size: int):
        super().__init__(decoder, joint_network, batch_size)
        self.tokens: List[Tuple[int, ...]] = [()] * batch_size
        self.scores = torch.zeros(batch_size, dtype=torch.float64)
        self.decoder_projected = self._decoder_projection(self.tokens)  # (B, joint_space)

    def _advance(self, encoder_out: torch.Tensor, lengths: torch.Tensor) -> None:
        encoder_projected = per_frame(self.joint_network.lin_enc, encoder_out)  # (B, T, joint_space)
        for t in range(encoder_out.size(1)):
            active = lengths > t
            best_logp, best = self._log_probs(encoder_projected[:, t], self.decoder_projected).max(dim=-1)
            best_logp, best = best_logp.cpu(), best.cpu()
            self.scores += torch.where(active, best_logp.double(), torch.zeros((), dtype=torch.float64))
            emitting = [b for b in range(self.batch_size) if active[b] and int(best[b]) != self.blank_id]
            if not emitting:
                continue
            for b in emitting:
                self.tokens[b] = self.tokens[b] + (int(best[b]),)
            self.decoder_projected[emitting] = self._decoder_projection([self.tokens[b] for b in emitting])

    def nbest(self, n: int = 1) -> List[List[Hypothesis]]:
        return [[Hypothesis(tokens, float(score))] for tokens, score in zip(self.tokens, self.scores)]


class ModifiedBeamSearch(_TransducerSearch):
    """icefall's modified beam search (see the module docstring), hypotheses of all streams batched.

    Args:
        decoder: the model's ``StatelessTransducerDecoder``.
        joint_network: the model's ``JointNetwork``.
        batch_size: number of streams.
        beam_size: hypotheses kept per stream (icefall's ``num_active_paths``).

    A hypothesis' score is the log of the summed probabilities of the alignments merged into it; the best is the
    highest score (no length normalisation, as icefall's streaming decoding).
    """

    def __init__(self, decoder: torch.nn.Module, joint_network: torch.nn.Module, batch_size: int, beam_size: int):
        super().__init__(decoder, joint_network, batch_size)
        self.beam_size = beam_size
        start = self._decoder_projection([()])[0]
        # per stream: list of (tokens, log-probability (0-dim float32 tensor), projected decoder output)
        self.beams: List[List[Tuple[Tuple[int, ...], torch.Tensor, torch.Tensor]]] = [
            [((), torch.zeros((), device=start.device), start)] for _ in range(batch_size)
        ]

    def _advance(self, encoder_out: torch.Tensor, lengths: torch.Tensor) -> None:
        encoder_projected = per_frame(self.joint_network.lin_enc, encoder_out)  # (B, T, joint_space)
        for t in range(encoder_out.size(1)):
            streams = [b for b in range(self.batch_size) if lengths[b] > t]
            if streams:
                self._step([encoder_projected[b, t] for b in streams], streams)

    def _step(self, frames: List[torch.Tensor], streams: List[int]) -> None:
        """One frame for the given streams; ``frames[i]`` is stream ``streams[i]``'s projected encoder frame."""
        hyps = [hyp for b in streams for hyp in self.beams[b]]
        counts = [len(self.beams[b]) for b in streams]
        encoder_rows = torch.stack([frame for frame, count in zip(frames, counts) for _ in range(count)])
        log_probs = self._log_probs(encoder_rows, torch.stack([hyp[2] for hyp in hyps]))
        log_probs = log_probs + torch.stack([hyp[1] for hyp in hyps]).unsqueeze(1)  # (num_hyps, V)
        vocab_size = log_probs.size(1)
        selected = []  # per stream: [(tokens, log-probability, parent index or None for a new token)]
        first = 0
        for count in counts:
            scores, flat = log_probs[first : first + count].reshape(-1).topk(min(self.beam_size, count * vocab_size))
            merged = {}
            for score, index in zip(scores, flat.tolist()):
                parent, token = first + index // vocab_size, index % vocab_size
                tokens = hyps[parent][0] if token == self.blank_id else hyps[parent][0] + (token,)
                if tokens in merged:
                    merged[tokens] = (tokens, torch.logaddexp(merged[tokens][1], score), merged[tokens][2])
                else:
                    merged[tokens] = (tokens, score, parent if token == self.blank_id else None)
            selected.append(list(merged.values()))
            first += count
        # one decoder call for every hypothesis that emitted a token in this frame
        new = [tokens for stream in selected for tokens, _, parent in stream if parent is None]
        new_projected = iter(self._decoder_projection(new)) if new else iter(())
        for b, stream in zip(streams, selected):
            self.beams[b] = [
                (tokens, score, hyps[parent][2] if parent is not None else next(new_projected))
                for tokens, score, parent in stream
            ]

    def nbest(self, n: int = 1) -> List[List[Hypothesis]]:
        results = []
        for beam in self.beams:
            ranked = sorted(beam, key=lambda hyp: (-float(hyp[1]), hyp[0]))
            results.append([Hypothesis(tokens, float(score)) for tokens, score, _ in ranked[:n]])
        return results
