"""The streaming Zipformer as an ONNX graph that encodes one chunk: sherpa-onnx's online ``zipformer2`` layout.

One call of the graph encodes one chunk of ``C`` embed frames (``C`` = the decode chunk size, 16 for 320 ms) for N
streams, from ``T = 2C + 13`` feature frames (its own ``2C`` and the embed's right context), and returns the new
states; the caller advances by ``decode_chunk_len = 2C`` feature frames. It is the tensor part of
:meth:`~hybrid_encoders.encoders.zipformer.ZipformerEncoder.forward_streaming`
(:func:`hybrid_encoders.streaming.zipformer_stream.encode_chunk`) with the states laid out as sherpa-onnx's
``OnlineZipformer2TransducerModel`` and ``OnlineZipformer2CtcModel`` create, stack and split them:

==========================  ==========================================  ========================================
input (output: ``new_``)    shape                                       content
==========================  ==========================================  ========================================
``x``                       (N, T, F) float32                           feature frames (before normalisation)
``cached_key_i``            (L_s, N, heads * query_head_dim)            layer i's keys of the left context
``cached_nonlin_attn_i``    (1, N, L_s, 3 * encoder_dim / 4)            its non-linear attention's gated values
``cached_val1_i``           (L_s, N, heads * value_head_dim)            its first attention's values
``cached_val2_i``           (L_s, N, heads * value_head_dim)            its second attention's values
``cached_conv1_i``          (N, encoder_dim, kernel // 2)               its first convolution's last inputs
``cached_conv2_i``          (N, encoder_dim, kernel // 2)               its second convolution's last inputs
``embed_states``            (N, 128, 3, (((F - 1) // 2) - 1) // 2)      the embed's ConvNeXt inputs
``processed_lens``          (N,) int64                                  embed frames encoded so far
==========================  ==========================================  ========================================

for layers i = 0, 1, ... stack after stack (s: the layer's stack, L_s its left context at its frame rate); zeros and
0 start a stream. The first output is ``encoder_out`` (N, C / 2, J) for transducers (already projected to the joint
space, as the offline encoder graph) or ``log_probs`` (N, C / 2, V) for CTC.
"""

from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from hybrid_encoders.deploy.graphs import FeatureNormalization
from hybrid_encoders.streaming.zipformer_state import LayerCache, ZipformerStreamingState
from hybrid_encoders.streaming.zipformer_stream import encode_chunk

STATE_KINDS = ("cached_key", "cached_nonlin_attn", "cached_val1", "cached_val2", "cached_conv1", "cached_conv2")


class StreamingChunkGraph(nn.Module):
    """Normalisation + one chunk of a causal Zipformer with its states + a head (CTC log-probs or the joint
    network's encoder projection), at the encoder's decode chunk setting.

    Args:
        normalization: the model's feature normalisation.
        encoder: a causal :class:`~hybrid_encoders.encoders.zipformer.ZipformerEncoder` (eval mode).
        head: (N, t, D) -> (N, t, V or J).
    """

    def __init__(self, normalization: FeatureNormalization, encoder: nn.Module, head: Callable):
        super().__init__()
        geometry = encoder.streaming_geometry()
        self.normalization = normalization
        self.encoder = encoder
        self.head = head
        self.chunk_size = geometry.chunk_size
        self.left_context = geometry.left_context_frames
        self.frames = geometry.features_needed(1)
        self.num_layers = sum(encoder.config["num_encoder_layers"])

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(N, T, F) features and the 6 * layers + 2 states -> the chunk's head output and the new states."""
        caches, embed_left, processed = unpack_states(states)
        chunk = self.chunk_size
        features = self.normalization.normalize_frames(x)
        encoded, embed_left, caches = encode_chunk(
            self.encoder, features, embed_left, caches, processed, chunk, chunk + 3, False, chunk, self.left_context
        )
        return (self.head(encoded), *pack_states(caches, embed_left, processed + chunk))

    def initial_states(self, batch: int) -> List[torch.Tensor]:
        """The zero states of ``batch`` new streams, in the graph's input order (what sherpa-onnx creates)."""
        signature = {"left_context_frames": self.left_context}
        state = ZipformerStreamingState.initial(self.encoder, signature, batch, torch.device("cpu"), torch.float32)
        return pack_states(state.layers, state.embed_left, torch.zeros(batch, dtype=torch.int64))

    def state_batch_axes(self) -> List[int]:
        """The batch axis of each state input, in order."""
        return [1, 1, 1, 1, 0, 0] * self.num_layers + [0, 0]

    def state_names(self) -> List[str]:
        """The state inputs' names (outputs: ``new_`` + name), in order."""
        names = [f"{kind}_{layer}" for layer in range(self.num_layers) for kind in STATE_KINDS]
        return names + ["embed_states", "processed_lens"]

    def metadata(self) -> Dict[str, str]:
        """The metadata keys sherpa-onnx's online Zipformer2 models read (comma-separated per-stack lists)."""
        config = self.encoder.config

        def joined(values) -> str:
            return ",".join(str(value) for value in values)

        return {
            "encoder_dims": joined(config["encoder_dim"]),
            "query_head_dims": joined(config["query_head_dim"]),
            "value_head_dims": joined(config["value_head_dim"]),
            "num_heads": joined(config["num_heads"]),
            "num_encoder_layers": joined(config["num_encoder_layers"]),
            "cnn_module_kernels": joined(config["cnn_module_kernel"]),
            "left_context_len": joined(self.left_context // factor for factor in config["downsampling_factor"]),
            "T": str(self.frames),
            "decode_chunk_len": str(2 * self.chunk_size),
            "chunk_size": str(self.chunk_size),
            "left_context_frames": str(self.left_context),
        }


def pack_states(caches: List[LayerCache], embed_left: torch.Tensor, processed: torch.Tensor) -> List[torch.Tensor]:
    """Our batch-first caches -> the graph's state tensors (the table of the module docstring), in order."""
    states = []
    for cache in caches:
        states += [
            cache.keys.transpose(0, 1), cache.nonlin_values.unsqueeze(0), cache.values1.transpose(0, 1),
            cache.values2.transpose(0, 1), cache.conv1, cache.conv2,
        ]  # fmt: skip
    return states + [embed_left, processed]


def unpack_states(states: Sequence[torch.Tensor]) -> Tuple[List[LayerCache], torch.Tensor, torch.Tensor]:
    """The inverse of :func:`pack_states`: (per-layer caches, embed_left, processed)."""
    caches = []
    for layer in range(0, len(states) - 2, 6):
        key, nonlin, value1, value2, conv1, conv2 = states[layer : layer + 6]
        caches.append(
            LayerCache(key.transpose(0, 1), nonlin[0], value1.transpose(0, 1), value2.transpose(0, 1), conv1, conv2)
        )
    return caches, states[-2], states[-1]
