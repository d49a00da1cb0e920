"""What a streaming Zipformer carries from one piece of an utterance to the next, and its frame arithmetic.

Frame rates: features at 100 Hz (10 ms shift), embed frames at 50 Hz, stack k at 50 / downsampling_factor[k] Hz,
output at 25 Hz. A chunk is ``chunk_size`` = C embed frames: it consumes 2C feature frames, needs
``feature_lookahead`` = 13 more (the embed's convolutions read 7 frames beyond 2 per output frame, its ConvNeXt 3 embed
frames = 6 feature frames of right context) and gives C / 2 output frames. icefall's streaming export feeds the same
T = 2C + 13 feature frames per chunk (45 for C = 16, its ``decode_chunk_len`` 32 plus ``pad_length`` 13).

The state (:class:`ZipformerStreamingState`) holds only bounded history, so memory and time per chunk do not grow
with the audio before: per utterance, the feature frames not yet consumed (< 2C + 13), the embed's 3 ConvNeXt input
frames before the next chunk, and per layer the keys, the two attention value sets and the non-linear attention's
gated values of the last L frames (L = the left context at the layer's frame rate) and the two convolutions' last
k // 2 inputs; plus counters.
"""

import dataclasses
import weakref
from typing import Any, Dict, List, Optional

import torch

from hybrid_encoders.streaming.chunking import left_context_chunks


@dataclasses.dataclass(frozen=True)
class StreamingGeometry:
    """Frame arithmetic of a streaming Zipformer at one chunk setting.

    Args:
        chunk_size: C, embed (50 Hz) frames per chunk.
        left_context_frames: embed frames a chunk attends to before itself (whole chunks: ``max(1, left // C) * C``).
        feature_lookahead: feature frames needed after a chunk's own 2C before it can be emitted (13).
    """

    chunk_size: int
    left_context_frames: int
    feature_lookahead: int

    @classmethod
    def of(cls, chunk_size: int, left_context_frames: int, feature_lookahead: int) -> "StreamingGeometry":
        """The geometry of a decode setting, with the left context rounded to whole chunks as attention sees it."""
        if chunk_size <= 0 or left_context_frames <= 0:
            raise ValueError(
                f"streaming needs a finite chunk size and left context (bounded state), got chunk_size={chunk_size}, "
                f"left_context_frames={left_context_frames}; choose them with decode_chunk_size / "
                "decode_left_context_frames or set_streaming()"
            )
        return cls(chunk_size, left_context_chunks(chunk_size, left_context_frames) * chunk_size, feature_lookahead)

    @property
    def features_per_chunk(self) -> int:
        """Feature frames one chunk consumes (2C): the stride of a decoder's feeding."""
        return 2 * self.chunk_size

    @property
    def output_frames_per_chunk(self) -> int:
        """Output (25 Hz) frames one chunk gives (C / 2)."""
        return self.chunk_size // 2

    def features_needed(self, chunks: int = 1) -> int:
        """Feature frames an utterance must have received before its first ``chunks`` chunks are emitted:
        ``2 C chunks + 13`` (45 for one 320 ms chunk, C = 16)."""
        return self.features_per_chunk * chunks + self.feature_lookahead

    def chunk_ms(self, frame_shift_ms: float = 10.0) -> float:
        """Audio per chunk (320 ms for C = 16)."""
        return self.features_per_chunk * frame_shift_ms

    def right_context_ms(self, frame_shift_ms: float = 10.0) -> float:
        """Audio after a chunk that must arrive before it is emitted (130 ms), besides the front end's window."""
        return self.feature_lookahead * frame_shift_ms

    def algorithmic_latency_ms(self, frame_shift_ms: float = 10.0) -> float:
        """Chunk + right context: from the first sample of a chunk to when its frames can be emitted."""
        return self.chunk_ms(frame_shift_ms) + self.right_context_ms(frame_shift_ms)


@dataclasses.dataclass
class LayerCache:
    """One Zipformer layer's history, batch first: L frames of the left context at the layer's frame rate.

    Attributes:
        keys: (B, L, H dq) attention keys.
        nonlin_values: (B, L, 3C/4) gated values of the non-linear attention.
        values1, values2: (B, L, H dv) values of the two self-attentions.
        conv1, conv2: (B, C, k // 2) inputs of the two causal depthwise convolutions.
    """

    keys: torch.Tensor
    nonlin_values: torch.Tensor
    values1: torch.Tensor
    values2: torch.Tensor
    conv1: torch.Tensor
    conv2: torch.Tensor

    def select(self, index: Optional[torch.Tensor]) -> "LayerCache":
        """The caches of the utterances ``index`` (None: all)."""
        if index is None:
            return self
        return LayerCache(*(tensor.index_select(0, index) for tensor in dataclasses.astuple(self)))

    def merge(self, index: Optional[torch.Tensor], part: "LayerCache") -> "LayerCache":
        """These caches with those of the utterances ``index`` replaced by ``part`` (None: all)."""
        if index is None:
            return part
        pairs = zip(dataclasses.astuple(self), dataclasses.astuple(part))
        return LayerCache(*(tensor.index_copy(0, index, new) for tensor, new in pairs))


@dataclasses.dataclass
class ZipformerStreamingState:
    """State of B utterances streamed through one :class:`~hybrid_encoders.encoders.zipformer.ZipformerEncoder`.

    Create it by calling ``forward_streaming(..., states=None)``; pass the returned state to the next call.

    Attributes:
        signature: the encoder configuration and chunk setting it was made for.
        features: per utterance, the (n, F) feature frames received but not yet consumed; the first is frame
            ``2 * processed``.
        embed_left: (B, 128, 3, F') the embed's ConvNeXt input frames just before the next chunk (zeros at start).
        layers: one :class:`LayerCache` per layer, stack by stack.
        processed: per utterance, embed frames encoded (a multiple of the chunk size until the final piece).
        received: per utterance, feature frames received.
        finished: per utterance, whether its final piece has been processed.
    """

    signature: Dict[str, Any]
    encoder: Any  # weakref.ref to the encoder
    features: List[torch.Tensor]
    embed_left: torch.Tensor
    layers: List[LayerCache]
    processed: List[int]
    received: List[int]
    finished: List[bool]

    @property
    def batch_size(self) -> int:
        return len(self.processed)

    @classmethod
    def initial(
        cls, encoder, signature: Dict[str, Any], batch: int, device: torch.device, dtype: torch.dtype
    ) -> "ZipformerStreamingState":
        """Zero caches for ``batch`` new utterances of ``encoder``; ``signature["left_context_frames"]`` is the
        left context in embed frames (whole chunks)."""

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(batch, *shape, device=device, dtype=dtype)

        config = encoder.config
        layers = []
        for stack, factor in enumerate(config["downsampling_factor"]):
            frames = signature["left_context_frames"] // factor
            dim, heads = config["encoder_dim"][stack], config["num_heads"][stack]
            key_dim, value_dim = heads * config["query_head_dim"][stack], heads * config["value_head_dim"][stack]
            conv_left = config["cnn_module_kernel"][stack] // 2
            for _ in range(config["num_encoder_layers"][stack]):
                layers.append(
                    LayerCache(
                        zeros(frames, key_dim), zeros(frames, 3 * dim // 4), zeros(frames, value_dim),
                        zeros(frames, value_dim), zeros(dim, conv_left), zeros(dim, conv_left),
                    )  # fmt: skip
                )
        convnext = encoder.encoder_embed.convnext
        channels = convnext.depthwise_conv.in_channels
        bins = encoder.encoder_embed.out.in_features // channels
        return cls(
            signature=signature,
            encoder=weakref.ref(encoder),
            features=[zeros(0, encoder.input_size)[0]] * batch,
            embed_left=zeros(channels, convnext.time_padding, bins),
            layers=layers,
            processed=[0] * batch,
            received=[0] * batch,
            finished=[False] * batch,
        )

    def check(self, encoder, signature: Dict[str, Any], batch: int) -> None:
        """Raise a ValueError when this state cannot continue on ``encoder`` with a batch of ``batch`` pieces."""
        if self.signature != signature:
            keys = {**signature, **self.signature}
            differing = [key for key in keys if self.signature.get(key) != signature.get(key)]
            raise ValueError(
                "zipformer: these states were made for another model or chunk setting (they differ in "
                + ", ".join(f"{key}: {self.signature.get(key)!r}, now {signature.get(key)!r}" for key in differing)
                + "); start the utterances again with states=None"
            )
        if self.encoder() is not encoder:
            raise ValueError(
                "zipformer: these states were made by another ZipformerEncoder instance (same configuration, other "
                "weights); start the utterances again with states=None"
            )
        if self.batch_size != batch:
            raise ValueError(f"zipformer: the states hold {self.batch_size} utterances but xs has a batch of {batch}")
