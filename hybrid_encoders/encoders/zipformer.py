"""Zipformer encoder (Yao et al., "Zipformer: A faster and better encoder for automatic speech recognition",
ICLR 2024), equivalent to icefall's ``Zipformer2`` + ``Conv2dSubsampling`` (spec: research/zipformer.md).

    fbank (B, T, 80) -> conv2d_convnext embed (B, (T-7)//2, C_0) at 50 Hz
      -> 6 stacks at 50, 25, 12.5, 6.25, 12.5, 25 Hz (each downsampled, run, upsampled, bypass-combined)
      -> channel-wise merge of the last stacks to max(C) -> 2x learned downsample -> (B, ((T-7)//2+1)//2, max(C))

Module names reproduce icefall's, so an icefall state_dict loads with only the prefix ``encoder.`` added (and the
unused legacy per-layer ``bypass_scale`` removed; see :mod:`hybrid_encoders.convert.icefall_zipformer`).
Internally tensors are batch-first (icefall is time-first); the arithmetic is the same.

Training-only machinery (balancers, whitening, schedules, skips, feature masks) does nothing in eval mode.
Schedules follow ``batch_count``, an int64 buffer counting optimizer steps (see :meth:`ZipformerEncoder.forward`).
"""

import copy
import random
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from torch import nn

from hybrid_encoders.encoders.config import (
    check_types,
    constructor_types,
    reject_unknown,
    require_length,
    require_positive,
    resolve_config,
)
from hybrid_encoders.layers.bias_norm import BiasNorm
from hybrid_encoders.layers.bypass import BypassModule
from hybrid_encoders.layers.checkpointing import checkpointed
from hybrid_encoders.layers.compact_rel_positional import CompactRelPositionalEncoding
from hybrid_encoders.layers.export_mode import is_exporting
from hybrid_encoders.layers.masking import make_pad_mask, prepare_encoder_input, raise_too_short
from hybrid_encoders.layers.simple_resampling import SimpleDownsample, SimpleUpsample
from hybrid_encoders.layers.subsampling import build_subsampling
from hybrid_encoders.layers.zipformer_attention import NonlinAttention, RelPositionAttentionWeights, SelfAttention
from hybrid_encoders.layers.zipformer_conv_module import ZipformerConvModule
from hybrid_encoders.layers.zipformer_feed_forward import ZipformerFeedForward
from hybrid_encoders.regularization.balancer import Balancer
from hybrid_encoders.regularization.scheduled_float import FloatLike, ScheduledFloat, whitening_schedule
from hybrid_encoders.regularization.skipping import feature_masks, sequence_dropout, sequence_keep_mask
from hybrid_encoders.regularization.whiten import Whiten
from hybrid_encoders.step_counter import OptimizerStepCounter
from hybrid_encoders.streaming.chunking import (
    check_chunking,
    chunk_attention_mask,
    left_context_chunks,
    warn_if_untrained,
)
from hybrid_encoders.streaming.zipformer_state import StreamingGeometry, ZipformerStreamingState

NAME = "zipformer"

# icefall egs/librispeech/ASR/RESULTS.md (PR #1058); keys not set here take DEFAULTS (= icefall train.py defaults).
PRESETS = {
    "s": {
        "num_encoder_layers": [2, 2, 2, 2, 2, 2],
        "feedforward_dim": [512, 768, 768, 768, 768, 768],
        "encoder_dim": [192, 256, 256, 256, 256, 256],
        "encoder_unmasked_dim": [192, 192, 192, 192, 192, 192],
    },
    "m": {
        "num_encoder_layers": [2, 2, 3, 4, 3, 2],
        "feedforward_dim": [512, 768, 1024, 1536, 1024, 768],
        "encoder_dim": [192, 256, 384, 512, 384, 256],
        "encoder_unmasked_dim": [192, 192, 256, 256, 256, 192],
    },
    "l": {
        "num_encoder_layers": [2, 2, 4, 5, 4, 2],
        "feedforward_dim": [512, 768, 1536, 2048, 1536, 768],
        "encoder_dim": [192, 256, 512, 768, 512, 256],
        "encoder_unmasked_dim": [192, 192, 256, 320, 256, 192],
    },
}

DEFAULTS = {
    **PRESETS["m"],
    "downsampling_factor": [1, 2, 4, 8, 4, 2],
    "num_heads": [4, 4, 4, 8, 4, 4],
    "query_head_dim": 32,
    "value_head_dim": 12,
    "pos_head_dim": 4,
    "pos_dim": 48,
    "cnn_module_kernel": [31, 31, 15, 15, 15, 31],
    # (batch_count, value) breakpoints of the dropout in the feed-forward modules and after the embed
    "dropout_schedule": [[0, 0.3], [20000, 0.1]],
    # layer-drop warm-up: stack i's layers anneal their skip rate 0.5 -> final over
    # [warmup_batches * (i+1) / 7, warmup_batches * (i+2) / 7]
    "warmup_batches": 4000.0,
    # schedules read batch_count * schedule_batch_scale; icefall's duration-adjusted count is
    # max_duration * world_size / 600 (seconds of audio per optimizer step / 600 s)
    "schedule_batch_scale": 1.0,
    # streaming Zipformer (icefall --causal 1): chunk-causal convolutions and chunked attention. Training draws one
    # chunk size and one left context (50 Hz embed frames, -1 = full) per batch from these lists, as icefall does;
    # evaluation and streaming use decode_chunk_size / decode_left_context_frames (None: the lists' first entries).
    "causal": False,
    "chunk_size": [16, 32, 64, -1],
    "left_context_frames": [64, 128, 256, -1],
    "decode_chunk_size": None,
    "decode_left_context_frames": None,
    # recompute each layer's activations in the backward pass instead of keeping them (per stack, or one bool)
    "activation_checkpointing": False,
    # recompute the embed's activations in the backward pass (a fifth of the kept memory, ~7 % of a CPU step)
    "recompute_embed": True,
}

PER_STACK_KEYS = (
    "num_encoder_layers",
    "feedforward_dim",
    "encoder_dim",
    "encoder_unmasked_dim",
    "num_heads",
    "query_head_dim",
    "value_head_dim",
    "pos_head_dim",
    "cnn_module_kernel",
)

FEATURE_MASK_PROB = 0.125  # icefall get_feature_masks


def _convert_num_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Truncate or zero-pad the last axis of (B, T, C) to ``channels``."""
    if channels <= x.size(-1):
        return x[..., :channels]
    return F.pad(x, (0, channels - x.size(-1)))


class ZipformerLayer(nn.Module):
    """One Zipformer block (paper Fig. 2, spec §5.1), in icefall's order:

    FF1 -> NonlinAttention (head 0) -> SelfAttention1 -> Conv1 -> FF2 -> mid bypass -> SelfAttention2 -> Conv2 ->
    FF3 -> BiasNorm -> bypass, with one set of attention weights computed from the block input and used three times.

    Args:
        embed_dim: channels C.
        pos_dim: positional-encoding size.
        num_heads, query_head_dim, pos_head_dim, value_head_dim: attention sizes.
        feedforward_dim: F; the three feed-forwards use 3F/4, F, 5F/4.
        cnn_module_kernel: depthwise kernel size.
        dropout: feed-forward dropout (ScheduledFloat).
        causal: chunk-causal convolutions (a streaming Zipformer).

    Shapes: ``forward(x (B, T, C), pos_emb (2T-1, pos_dim), key_padding_mask (B, T), attn_mask (T, T), chunk_size)``
    -> (B, T, C).
    """

    def __init__(
        self,
        embed_dim: int,
        pos_dim: int,
        num_heads: int,
        query_head_dim: int,
        pos_head_dim: int,
        value_head_dim: int,
        feedforward_dim: int,
        cnn_module_kernel: int,
        dropout: FloatLike,
        causal: bool = False,
    ):
        super().__init__()
        self.bypass = BypassModule(embed_dim)  # its skip_rate (layer drop) is set by the stack
        self.bypass_mid = BypassModule(embed_dim)
        self.self_attn_weights = RelPositionAttentionWeights(
            embed_dim, pos_dim, num_heads, query_head_dim, pos_head_dim
        )
        self.self_attn1 = SelfAttention(embed_dim, num_heads, value_head_dim)
        self.self_attn2 = SelfAttention(embed_dim, num_heads, value_head_dim)
        self.feed_forward1 = ZipformerFeedForward(embed_dim, (feedforward_dim * 3) // 4, dropout)
        self.feed_forward2 = ZipformerFeedForward(embed_dim, feedforward_dim, dropout)
        self.feed_forward3 = ZipformerFeedForward(embed_dim, (feedforward_dim * 5) // 4, dropout)
        self.nonlin_attention = NonlinAttention(embed_dim, hidden_channels=3 * embed_dim // 4)
        self.conv_module1 = ZipformerConvModule(embed_dim, cnn_module_kernel, causal)
        self.conv_module2 = ZipformerConvModule(embed_dim, cnn_module_kernel, causal)
        self.norm = BiasNorm(embed_dim)

        # Training-only (spec §6.2): per-sequence skips of the sub-modules and gradient balancers.
        self.attention_skip_rate = ScheduledFloat((0.0, 0.2), (4000.0, 0.05), (16000.0, 0.0))
        self.conv_skip_rate = ScheduledFloat((0.0, 0.2), (4000.0, 0.05), (16000.0, 0.0))
        self.const_attention_rate = ScheduledFloat((0.0, 0.25), (4000.0, 0.025))
        self.ff2_skip_rate = ScheduledFloat((0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))
        self.ff3_skip_rate = ScheduledFloat((0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))
        self.balancer1 = Balancer(embed_dim, -1, min_positive=0.45, max_positive=0.55, min_abs=0.2, max_abs=4.0)
        self.balancer_na = Balancer(
            embed_dim, -1, min_positive=0.3, max_positive=0.7, min_abs=ScheduledFloat((0.0, 0.004), (4000.0, 0.02)),
            prob=0.05,
        )  # fmt: skip
        self.balancer_ff2 = Balancer(
            embed_dim, -1, min_positive=0.3, max_positive=0.7, min_abs=ScheduledFloat((0.0, 0.0), (4000.0, 0.1)),
            max_abs=2.0, prob=0.05,
        )  # fmt: skip
        self.balancer_ff3 = Balancer(
            embed_dim, -1, min_positive=0.3, max_positive=0.7, min_abs=ScheduledFloat((0.0, 0.0), (4000.0, 0.2)),
            max_abs=4.0, prob=0.05,
        )  # fmt: skip
        self.balancer2 = Balancer(embed_dim, -1, min_positive=0.45, max_positive=0.55, min_abs=0.1, max_abs=4.0)
        self.whiten = Whiten(1, whitening_schedule(4.0, ratio=3.0), prob=(0.025, 0.25), grad_scale=0.01)

    def _nonlin_attention_weights(self, weights: torch.Tensor) -> torch.Tensor:
        """Head 0 of (B, H, T, T) weights; while training, sometimes replaced by a uniform average over the
        unmasked keys, to teach NonlinAttention an averaging-over-time behaviour."""
        head0 = weights[:, 0]
        if self.training and random.random() < float(self.const_attention_rate):
            unmasked = (head0 > 0.0).to(head0.dtype)
            head0 = unmasked / unmasked.sum(dim=-1, keepdim=True)
        return head0

    def forward(
        self,
        x: torch.Tensor,
        pos_emb: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor],
        attn_mask: Optional[torch.Tensor] = None,
        chunk_size: int = -1,
    ) -> torch.Tensor:
        training = self.training
        x_orig = x
        weights = self.self_attn_weights(x, pos_emb, key_padding_mask, attn_mask)  # (B, H, T, T)
        x = x + self.feed_forward1(x)
        # one per-sequence skip mask shared by the three attention-weighted modules
        attention_keep = sequence_keep_mask(x, float(self.attention_skip_rate), training)

        def attention_residual(out: torch.Tensor) -> torch.Tensor:
            return out if attention_keep is None else out * attention_keep

        x = x + attention_residual(self.balancer_na(self.nonlin_attention(x, self._nonlin_attention_weights(weights))))
        x = x + attention_residual(self.self_attn1(x, weights))
        conv_skip_rate = float(self.conv_skip_rate)
        x = x + sequence_dropout(self.conv_module1(x, key_padding_mask, chunk_size), conv_skip_rate, training)
        x = x + sequence_dropout(self.balancer_ff2(self.feed_forward2(x)), float(self.ff2_skip_rate), training)
        x = self.bypass_mid(x_orig, x)
        x = x + attention_residual(self.self_attn2(x, weights))
        x = x + sequence_dropout(self.conv_module2(x, key_padding_mask, chunk_size), conv_skip_rate, training)
        x = x + sequence_dropout(self.balancer_ff3(self.feed_forward3(x)), float(self.ff3_skip_rate), training)
        x = self.bypass(x_orig, self.norm(self.balancer1(x)))
        return self.whiten(self.balancer2(x))


class ZipformerStack(nn.Module):
    """A stack of identical-at-init Zipformer layers at one frame rate (icefall Zipformer2Encoder).

    Args:
        layer: the first layer; ``num_layers`` deep copies are made.
        num_layers: layers in the stack.
        pos_dim: positional-encoding size.
        warmup_begin, warmup_end: batch counts over which the layer-drop rates anneal, layer by layer, from 0.5 to
            ``final_layerdrop_rate``.
        final_layerdrop_rate: layer-drop rate after warm-up.
        activation_checkpointing: keep only each layer's input for the backward pass and recompute the rest there
            (:mod:`hybrid_encoders.layers.checkpointing`; same random draws, same gradients).

    Shapes: ``forward(x (B, T, C), key_padding_mask (B, T), feature_mask (B, 1, C) or None, chunk_size,
    left_context_chunks) -> (B, T, C)``; chunk_size in this stack's frames (-1: full context).
    """

    def __init__(
        self,
        layer: ZipformerLayer,
        num_layers: int,
        pos_dim: int,
        warmup_begin: float,
        warmup_end: float,
        final_layerdrop_rate: float,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        self.encoder_pos = CompactRelPositionalEncoding(pos_dim, dropout_rate=0.15)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        delta = (warmup_end - warmup_begin) / num_layers
        for index, stacked in enumerate(self.layers):
            begin = warmup_begin + index * delta
            stacked.bypass.skip_rate = ScheduledFloat((begin, 0.5), (begin + delta, final_layerdrop_rate))
        self.activation_checkpointing = activation_checkpointing

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor],
        feature_mask: Optional[torch.Tensor] = None,
        chunk_size: int = -1,
        left_context_chunks: int = -1,
    ) -> torch.Tensor:
        pos_emb = self.encoder_pos(x.size(1), device=x.device, dtype=x.dtype)
        attn_mask = chunk_attention_mask(x.size(1), chunk_size, left_context_chunks, x.device)
        if feature_mask is not None:
            x = x * feature_mask
        for layer in self.layers:
            x = checkpointed(
                layer, x, pos_emb, key_padding_mask, attn_mask, chunk_size, enabled=self.activation_checkpointing
            )
            if feature_mask is not None:
                x = x * feature_mask
        return x


class DownsampledZipformerStack(nn.Module):
    """A stack run at ``factor`` times lower frame rate, upsampled back and bypass-combined with its input
    (icefall DownsampledZipformer2Encoder). A downsampled frame counts as padding iff its first frame does.

    Shapes: ``forward(x (B, T, C), key_padding_mask (B, ceil(T / factor)), feature_mask, chunk_size,
    left_context_chunks) -> (B, T, C)``; chunk_size in input frames, a multiple of ``factor`` (or -1).
    """

    def __init__(self, encoder: ZipformerStack, channels: int, factor: int):
        super().__init__()
        self.downsample = SimpleDownsample(factor)
        self.encoder = encoder
        self.upsample = SimpleUpsample(factor)
        self.out_combiner = BypassModule(channels)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor],
        feature_mask: Optional[torch.Tensor] = None,
        chunk_size: int = -1,
        left_context_chunks: int = -1,
    ) -> torch.Tensor:
        stack_chunk = chunk_size // self.downsample.factor if chunk_size > 0 else chunk_size
        y = self.encoder(self.downsample(x), key_padding_mask, feature_mask, stack_chunk, left_context_chunks)
        return self.out_combiner(x, self.upsample(y)[:, : x.size(1)])


class ZipformerStacks(nn.Module):
    """The six (or more) stacks, the channel-wise merge and the final 2x downsampling (icefall Zipformer2).

    Shapes: ``forward(x (B, T, C_0), lengths (B,), key_padding_mask (B, T) or None, chunk_size, left_context_chunks)``
    -> ``((B, (T + 1) // 2, max(C)), (lengths + 1) // 2)``; chunk_size in embed frames (-1: full context).
    """

    def __init__(self, config: dict):
        super().__init__()
        self.downsampling_factor = tuple(config["downsampling_factor"])
        self.encoder_dim = tuple(config["encoder_dim"])
        self.encoder_unmasked_dim = tuple(config["encoder_unmasked_dim"])
        dropout = ScheduledFloat(*[tuple(point) for point in config["dropout_schedule"]])
        num_stacks = len(self.downsampling_factor)
        warmup = float(config["warmup_batches"])
        stacks = []
        for i, factor in enumerate(self.downsampling_factor):
            layer = ZipformerLayer(
                embed_dim=self.encoder_dim[i],
                pos_dim=config["pos_dim"],
                num_heads=config["num_heads"][i],
                query_head_dim=config["query_head_dim"][i],
                pos_head_dim=config["pos_head_dim"][i],
                value_head_dim=config["value_head_dim"][i],
                feedforward_dim=config["feedforward_dim"][i],
                cnn_module_kernel=config["cnn_module_kernel"][i],
                dropout=dropout,
                causal=config["causal"],
            )
            stack = ZipformerStack(
                layer,
                config["num_encoder_layers"][i],
                config["pos_dim"],
                warmup_begin=warmup * (i + 1) / (num_stacks + 1),
                warmup_end=warmup * (i + 2) / (num_stacks + 1),
                final_layerdrop_rate=0.035 * factor**0.5,
                activation_checkpointing=config["activation_checkpointing"][i],
            )
            # icefall wraps only the downsampled stacks, which gives stack 0 no ".encoder." infix in its keys
            stacks.append(stack if factor == 1 else DownsampledZipformerStack(stack, self.encoder_dim[i], factor))
        self.encoders = nn.ModuleList(stacks)
        self.downsample_output = SimpleDownsample(2)

    def full_dim_output(self, outputs: List[torch.Tensor]) -> torch.Tensor:
        """Merge stack outputs to max(C) channels: the last stack's channels, then each wider earlier stack
        contributes the channels beyond the current width (spec §1.3)."""
        pieces = [outputs[-1]]
        width = outputs[-1].size(-1)
        for output in reversed(outputs[:-1]):
            if output.size(-1) > width:
                pieces.append(output[..., width:])
                width = output.size(-1)
        return torch.cat(pieces, dim=-1)

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor],
        chunk_size: int = -1,
        left_context_chunks: int = -1,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            masks = feature_masks(
                x.size(0), self.encoder_dim, self.encoder_unmasked_dim, FEATURE_MASK_PROB, x.device, x.dtype
            )
        else:
            masks = [None] * len(self.encoders)
        outputs = []
        for stack, factor, dim, mask in zip(self.encoders, self.downsampling_factor, self.encoder_dim, masks):
            stack_mask = None if key_padding_mask is None else key_padding_mask[:, ::factor]
            x = stack(_convert_num_channels(x, dim), stack_mask, mask, chunk_size, left_context_chunks)
            outputs.append(x)
        x = self.downsample_output(self.full_dim_output(outputs))
        return x, torch.div(lengths + 1, 2, rounding_mode="floor")


def _per_stack(key: str, value: Union[int, Sequence[int]], num_stacks: int) -> List[int]:
    """Broadcast an int to every stack, or check a list's length (ValueError naming the key)."""
    if isinstance(value, int):
        return [value] * num_stacks
    values = list(value)
    require_length(NAME, key, values, num_stacks, "downsampling_factor")
    return values


def _validate(config: dict) -> dict:
    """Resolve per-stack values and check them; returns the completed config."""
    factors = list(config["downsampling_factor"])
    if not factors or any(not isinstance(f, int) or f < 1 for f in factors):
        raise ValueError(f"{NAME}: downsampling_factor must be a non-empty list of ints >= 1, got {factors}")
    config["downsampling_factor"] = factors
    for key in PER_STACK_KEYS:
        config[key] = _per_stack(key, config[key], len(factors))
        for value in config[key]:
            require_positive(NAME, key, value)
    for i, (unmasked, dim) in enumerate(zip(config["encoder_unmasked_dim"], config["encoder_dim"])):
        if unmasked > dim:
            raise ValueError(f"{NAME}: encoder_unmasked_dim[{i}]={unmasked} exceeds encoder_dim[{i}]={dim}")
    for i, kernel in enumerate(config["cnn_module_kernel"]):
        if kernel % 2 != 1:
            raise ValueError(f"{NAME}: cnn_module_kernel[{i}]={kernel} must be odd (a centred convolution)")
    if config["pos_dim"] % 2 != 0 or config["pos_dim"] <= 0:
        raise ValueError(f"{NAME}: pos_dim must be a positive even number, got {config['pos_dim']}")
    schedule = config["dropout_schedule"]
    try:
        ScheduledFloat(*[tuple(point) for point in schedule])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{NAME}: dropout_schedule must be [[batch, rate], ...] with rising batches: {error}")
    if any(not 0.0 <= float(rate) < 1.0 for _, rate in schedule):
        raise ValueError(f"{NAME}: dropout_schedule rates must lie in [0, 1), got {schedule}")
    require_positive(NAME, "warmup_batches", config["warmup_batches"])
    require_positive(NAME, "schedule_batch_scale", config["schedule_batch_scale"])
    checkpointing = config["activation_checkpointing"]
    checkpointing = [checkpointing] * len(factors) if isinstance(checkpointing, bool) else list(checkpointing)
    require_length(NAME, "activation_checkpointing", checkpointing, len(factors), "downsampling_factor")
    config["activation_checkpointing"] = checkpointing
    for key in ("chunk_size", "left_context_frames"):
        config[key] = [config[key]] if isinstance(config[key], int) else list(config[key])
        if not config[key]:
            raise ValueError(f"{NAME}: {key} needs at least one value")
    if config["causal"]:
        check_zipformer_chunking(config, config["chunk_size"], config["left_context_frames"])
        chunk_size, left_context = decode_chunking(config)
        check_zipformer_chunking(config, [chunk_size], [left_context])
    return config


def decode_chunking(config: dict) -> Tuple[int, int]:
    """(chunk_size, left_context_frames) of evaluation and streaming: the decode_* keys, else the lists' first."""
    chunk_size, left_context = config["decode_chunk_size"], config["decode_left_context_frames"]
    return (
        config["chunk_size"][0] if chunk_size is None else chunk_size,
        config["left_context_frames"][0] if left_context is None else left_context,
    )


def check_zipformer_chunking(config: dict, chunk_sizes: Sequence[int], left_context_frames: Sequence[int]) -> None:
    """ValueError naming the key when these chunk sizes and left contexts do not fit the stacks."""
    factors = config["downsampling_factor"]
    conv_reach = [(kernel // 2) * factor for kernel, factor in zip(config["cnn_module_kernel"], factors)]
    check_chunking(NAME, chunk_sizes, left_context_frames, [*factors, 2], conv_reach)


class ZipformerEncoder(AbsEncoder):
    """ESPnet encoder ``encoder: zipformer`` (icefall Zipformer2 with its Conv2dSubsampling embed).

    Every argument except ``input_size`` and ``preset`` defaults to None = the preset's value, else icefall's
    train.py default (Zipformer-M). Per-stack arguments take a list with one entry per stack or a single int.

    Args:
        input_size: feature dimension (80-dim fbank).
        preset: "s", "m" or "l" (icefall's Zipformer-S/M/L).
        num_encoder_layers: layers per stack.
        downsampling_factor: frame-rate reduction of each stack relative to the 50 Hz embed output.
        encoder_dim: channels per stack; the output has max(encoder_dim) channels.
        encoder_unmasked_dim: channels per stack never hit by training-time feature masking (<= encoder_dim).
        feedforward_dim: feed-forward width F per stack (the three FFs use 3F/4, F, 5F/4).
        num_heads: attention heads per stack.
        query_head_dim, value_head_dim, pos_head_dim: per-head sizes (per stack or one int).
        pos_dim: size of the compact relative positional encoding (even).
        cnn_module_kernel: odd depthwise kernel size per stack.
        dropout_schedule: ``[[batch, rate], ...]`` piecewise-linear dropout of the FFs and the embed output.
        warmup_batches: batch count by which the layer-drop warm-up of all stacks has finished.
        schedule_batch_scale: factor from optimizer steps to the batch count the schedules read (icefall's
            duration-adjusted count: max_duration * world_size / 600).
        causal: a streaming Zipformer (icefall ``--causal 1``): chunk-causal convolutions, chunked attention, and
            :meth:`forward_streaming`. Default False.
        chunk_size: chunk sizes in 50 Hz embed frames (multiples of every downsampling factor and 2, or -1 = full
            context), one drawn per training batch. Default [16, 32, 64, -1] (320 ms .. full).
        left_context_frames: left contexts in embed frames (-1 = unlimited), one drawn per training batch
            (a chunk sees ``max(1, left // chunk)`` whole chunks before it). Default [64, 128, 256, -1].
        decode_chunk_size, decode_left_context_frames: the fixed setting of evaluation (``forward`` in eval mode,
            "simulated streaming") and of :meth:`forward_streaming`; None: the first entry of each list. A value
            not in the training lists works, with a warning (also :meth:`set_streaming`).
        activation_checkpointing: recompute the layers' activations in the backward pass instead of keeping them, a
            bool for every stack or a list with one per stack. Saves most of the training memory of those stacks
            for about one more forward pass; same random draws and gradients. Default False.
        recompute_embed: while training, keep only the features for the embed's backward pass and recompute its
            activations there (same random draws and gradients). Its 2x-subsampled convolutions and ConvNeXt
            block keep about a fifth of Zipformer-M's training memory otherwise (258 MB at batch 2 x 30 s), and
            recomputing them costs about 7 % of a CPU training step (docs/benchmarks.md). Default True.

    Shapes: ``forward(xs_pad (B, T, input_size), ilens (B,))`` ->
    ``(B, T', max(encoder_dim))``, ``olens = ((ilens - 7) // 2 + 1) // 2``, ``T' = max(olens)``.
    """

    def __init__(
        self,
        input_size: int,
        preset: Optional[str] = None,
        num_encoder_layers: Optional[Union[int, Sequence[int]]] = None,
        downsampling_factor: Optional[Sequence[int]] = None,
        encoder_dim: Optional[Union[int, Sequence[int]]] = None,
        encoder_unmasked_dim: Optional[Union[int, Sequence[int]]] = None,
        feedforward_dim: Optional[Union[int, Sequence[int]]] = None,
        num_heads: Optional[Union[int, Sequence[int]]] = None,
        query_head_dim: Optional[Union[int, Sequence[int]]] = None,
        value_head_dim: Optional[Union[int, Sequence[int]]] = None,
        pos_head_dim: Optional[Union[int, Sequence[int]]] = None,
        pos_dim: Optional[int] = None,
        cnn_module_kernel: Optional[Union[int, Sequence[int]]] = None,
        dropout_schedule: Optional[Sequence[Sequence[float]]] = None,
        warmup_batches: Optional[float] = None,
        schedule_batch_scale: Optional[float] = None,
        causal: Optional[bool] = None,
        chunk_size: Optional[Union[int, Sequence[int]]] = None,
        left_context_frames: Optional[Union[int, Sequence[int]]] = None,
        decode_chunk_size: Optional[int] = None,
        decode_left_context_frames: Optional[int] = None,
        activation_checkpointing: Optional[Union[bool, Sequence[bool]]] = None,
        recompute_embed: Optional[bool] = None,
        **unknown,
    ):
        super().__init__()
        reject_unknown(NAME, unknown, ["preset", *DEFAULTS])
        check_types(NAME, {"input_size": input_size}, constructor_types(type(self)))
        require_positive(NAME, "input_size", input_size)
        given = dict(locals())
        for name in ("self", "__class__", "input_size", "preset", "unknown"):
            given.pop(name, None)
        self.config = self.build_config(preset, **given)
        if self.config["causal"]:
            self._warn_if_untrained(*decode_chunking(self.config))
        self.input_size = input_size
        self.encoder_embed = build_subsampling(
            "conv2d_convnext",
            input_size,
            self.config["encoder_dim"][0],
            dropout=ScheduledFloat(*[tuple(point) for point in self.config["dropout_schedule"]]),
            recompute=self.config["recompute_embed"],
        )
        self.encoder = ZipformerStacks(self.config)
        # Optimizer steps taken so far (hybrid_encoders.step_counter); saved with the model so schedules resume.
        self.register_buffer("batch_count", torch.zeros((), dtype=torch.int64))
        self._step_counter = OptimizerStepCounter()
        self._step_counter.attach(self, "batch_count")  # checkpoints include the step after the last forward
        self._schedules = [m for m in self.modules() if isinstance(m, ScheduledFloat)]

    @staticmethod
    def build_config(preset: Optional[str] = None, **given) -> dict:
        """The complete, validated configuration for ``preset`` and explicit values (None = not given)."""
        return _validate(resolve_config(NAME, PRESETS, DEFAULTS, preset, given, constructor_types(ZipformerEncoder)))

    def output_size(self) -> int:
        return max(self.config["encoder_dim"])

    def chunking(self) -> Tuple[int, int]:
        """(chunk_size, left_context_chunks) of the next forward: (-1, -1) when not causal; in training a random
        draw from the ``chunk_size`` / ``left_context_frames`` lists (per batch, as icefall); in eval the decode
        setting."""
        if not self.config["causal"]:
            return -1, -1
        if self.training:
            chunk_size = random.choice(self.config["chunk_size"])
            left_context = random.choice(self.config["left_context_frames"])
        else:
            chunk_size, left_context = decode_chunking(self.config)
        return chunk_size, left_context_chunks(chunk_size, left_context)

    def set_streaming(self, chunk_size: int, left_context_frames: Optional[int] = None) -> None:
        """Choose the chunk size (50 Hz embed frames) and left context of evaluation and streaming, without retraining.

        Args:
            chunk_size: a positive multiple of every downsampling factor and 2 (or -1: full context, not streamable).
            left_context_frames: embed frames of left context (-1: unlimited, not streamable); None keeps the current.

        Raises:
            ValueError: not a causal model, or a setting the stacks cannot use (named). A value outside the training
                lists works, but warns that the model was not trained for it.
        """
        if not self.config["causal"]:
            raise ValueError(f"{NAME}: set_streaming needs a causal model (encoder_conf causal: true)")
        if left_context_frames is None:
            left_context_frames = decode_chunking(self.config)[1]
        check_zipformer_chunking(self.config, [chunk_size], [left_context_frames])
        self._warn_if_untrained(chunk_size, left_context_frames)
        self.config["decode_chunk_size"] = chunk_size
        self.config["decode_left_context_frames"] = left_context_frames

    def _warn_if_untrained(self, chunk_size: int, left_context_frames: int) -> None:
        warn_if_untrained(NAME, "decode_chunk_size", chunk_size, self.config["chunk_size"])
        warn_if_untrained(NAME, "decode_left_context_frames", left_context_frames, self.config["left_context_frames"])

    def streaming_geometry(self) -> StreamingGeometry:
        """Frame arithmetic of :meth:`forward_streaming` at the decode setting: feature frames per chunk, lookahead,
        output frames per chunk, latency (see :class:`hybrid_encoders.streaming.zipformer_state.StreamingGeometry`)."""
        return StreamingGeometry.of(*decode_chunking(self.config), self.encoder_embed.streaming_lookahead)

    def forward_streaming(
        self,
        xs: torch.Tensor,
        ilens: torch.Tensor,
        states: Optional[ZipformerStreamingState] = None,
        is_final: Union[bool, torch.Tensor] = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, ZipformerStreamingState]:
        """Encode the next piece of each utterance of a batch, chunk by chunk, with cached state (causal models).

        Feeding an utterance's features in pieces of any sizes and finishing with ``is_final`` gives exactly the
        frames of :meth:`forward` in eval mode on the whole utterance alone (the decode chunk setting), in
        constant memory and time per chunk. Runs without gradients, in eval mode.

        Args:
            xs: (B, T_piece, input_size) the next feature frames of each utterance (any T_piece >= 0, padded).
            ilens: (B,) valid frames of this piece per utterance (0: nothing new).
            states: None to start B new utterances, else the states returned by the previous call.
            is_final: bool, or (B,) bool: these utterances end with this piece (their last frames are emitted).

        Returns:
            ys (B, T_new, max(encoder_dim)): the output frames that became final, per utterance ``olens[b]`` of them
            (zero-padded after); olens (B,); the new states.

        Raises:
            ValueError: not causal; training mode; an unlimited chunk or left context; wrong shapes or feature size;
                states of another model or chunk setting, or of another batch size; frames for an utterance after
                its final piece.
        """
        from hybrid_encoders.streaming.zipformer_stream import forward_streaming  # the streaming package builds on us

        return forward_streaming(self, xs, ilens, states, is_final)

    def _count_optimizer_step(self) -> None:
        """Advance ``batch_count`` if an optimizer step happened since the previous training forward, and pass the
        (optionally duration-scaled) count to every schedule."""
        steps = self._step_counter.advance(self.batch_count, self.parameters())
        scheduled_count = steps * self.config["schedule_batch_scale"]
        for schedule in self._schedules:
            schedule.batch_count = scheduled_count

    def espnet_initialization_fn(self) -> None:
        """Restore icefall's initialisation after ESPnet's ``init:`` re-initialised every parameter.

        Every module resets the parameters it owns (children before parents), then the layers of each stack are
        made identical copies of the first, as icefall builds them.
        """
        for module in reversed(list(self.modules())):
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for stack in self.encoder.encoders:
            layers = (stack.encoder if isinstance(stack, DownsampledZipformerStack) else stack).layers
            for layer in layers[1:]:
                layer.load_state_dict(layers[0].state_dict())

    def forward(
        self, xs_pad: torch.Tensor, ilens: torch.Tensor, prev_states: torch.Tensor = None
    ) -> Tuple[torch.Tensor, torch.Tensor, None]:
        """
        Args:
            xs_pad: (B, T, input_size) padded features.
            ilens: (B,) valid lengths.
            prev_states: unused (ESPnet interface).

        Returns:
            (B, T', max(encoder_dim)) encodings, (B,) lengths with T' = max(lengths), None.

        Raises:
            TooShortUttError: an input shorter than 9 frames (the embed's minimum).
            ValueError: wrong shape or feature size, NaN/Inf input.
        """
        xs_pad = prepare_encoder_input(xs_pad, ilens, self.input_size, NAME, next(self.parameters()).dtype)
        raise_too_short(NAME, ilens, self.encoder_embed.min_input_length)
        if self.training:
            self._count_optimizer_step()
        exporting = is_exporting()  # an exported graph has no value-dependent shapes or branches
        if not exporting:
            xs_pad = xs_pad[:, : int(ilens.max())]
        x, lengths = self.encoder_embed(xs_pad, ilens)
        padding = make_pad_mask(lengths, x.size(1))
        # without padding every mask operation is a no-op: skip them all (one check per forward)
        x, olens = self.encoder(x, lengths, padding if exporting or bool(padding.any()) else None, *self.chunking())
        return x, olens, None
