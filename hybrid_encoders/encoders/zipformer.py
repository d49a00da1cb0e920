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

from hybrid_encoders.encoders.config import reject_unknown, require_length, require_positive, resolve_config
from hybrid_encoders.layers.bias_norm import BiasNorm
from hybrid_encoders.layers.bypass import BypassModule
from hybrid_encoders.layers.compact_rel_positional import CompactRelPositionalEncoding
from hybrid_encoders.layers.masking import check_encoder_input, make_pad_mask, raise_too_short
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

    Shapes: ``forward(x (B, T, C), pos_emb (2T-1, pos_dim), key_padding_mask (B, T)) -> (B, T, C)``.
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
        self.conv_module1 = ZipformerConvModule(embed_dim, cnn_module_kernel)
        self.conv_module2 = ZipformerConvModule(embed_dim, cnn_module_kernel)
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
        self, x: torch.Tensor, pos_emb: torch.Tensor, key_padding_mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        training = self.training
        x_orig = x
        weights = self.self_attn_weights(x, pos_emb, key_padding_mask)  # (B, H, T, T)
        x = x + self.feed_forward1(x)
        # one per-sequence skip mask shared by the three attention-weighted modules
        attention_keep = sequence_keep_mask(x, float(self.attention_skip_rate), training)

        def attention_residual(out: torch.Tensor) -> torch.Tensor:
            return out if attention_keep is None else out * attention_keep

        x = x + attention_residual(self.balancer_na(self.nonlin_attention(x, self._nonlin_attention_weights(weights))))
        x = x + attention_residual(self.self_attn1(x, weights))
        x = x + sequence_dropout(self.conv_module1(x, key_padding_mask), float(self.conv_skip_rate), training)
        x = x + sequence_dropout(self.balancer_ff2(self.feed_forward2(x)), float(self.ff2_skip_rate), training)
        x = self.bypass_mid(x_orig, x)
        x = x + attention_residual(self.self_attn2(x, weights))
        x = x + sequence_dropout(self.conv_module2(x, key_padding_mask), float(self.conv_skip_rate), training)
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

    Shapes: ``forward(x (B, T, C), key_padding_mask (B, T), feature_mask (B, 1, C) or None) -> (B, T, C)``.
    """

    def __init__(
        self,
        layer: ZipformerLayer,
        num_layers: int,
        pos_dim: int,
        warmup_begin: float,
        warmup_end: float,
        final_layerdrop_rate: float,
    ):
        super().__init__()
        self.encoder_pos = CompactRelPositionalEncoding(pos_dim, dropout_rate=0.15)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        delta = (warmup_end - warmup_begin) / num_layers
        for index, stacked in enumerate(self.layers):
            begin = warmup_begin + index * delta
            stacked.bypass.skip_rate = ScheduledFloat((begin, 0.5), (begin + delta, final_layerdrop_rate))

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor],
        feature_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        pos_emb = self.encoder_pos(x.size(1), device=x.device, dtype=x.dtype)
        if feature_mask is not None:
            x = x * feature_mask
        for layer in self.layers:
            x = layer(x, pos_emb, key_padding_mask)
            if feature_mask is not None:
                x = x * feature_mask
        return x


class DownsampledZipformerStack(nn.Module):
    """A stack run at ``factor`` times lower frame rate, upsampled back and bypass-combined with its input
    (icefall DownsampledZipformer2Encoder). A downsampled frame counts as padding iff its first frame does.

    Shapes: ``forward(x (B, T, C), key_padding_mask (B, ceil(T / factor)), feature_mask) -> (B, T, C)``.
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
    ) -> torch.Tensor:
        y = self.encoder(self.downsample(x), key_padding_mask, feature_mask)
        return self.out_combiner(x, self.upsample(y)[:, : x.size(1)])


class ZipformerStacks(nn.Module):
    """The six (or more) stacks, the channel-wise merge and the final 2x downsampling (icefall Zipformer2).

    Shapes: ``forward(x (B, T, C_0), lengths (B,), key_padding_mask (B, T) or None)`` ->
    ``((B, (T + 1) // 2, max(C)), (lengths + 1) // 2)``.
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
            )
            stack = ZipformerStack(
                layer,
                config["num_encoder_layers"][i],
                config["pos_dim"],
                warmup_begin=warmup * (i + 1) / (num_stacks + 1),
                warmup_end=warmup * (i + 2) / (num_stacks + 1),
                final_layerdrop_rate=0.035 * factor**0.5,
            )
            # icefall wraps only the downsampled stacks, which gives stack 0 no ".encoder." infix in its keys
            stacks.append(stack if factor == 1 else DownsampledZipformerStack(stack, self.encoder_dim[i], factor))
        self.encoders = nn.ModuleList(stacks)
        self.downsample_output = SimpleDownsample(2)

    def _full_dim_output(self, outputs: List[torch.Tensor]) -> torch.Tensor:
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
        self, x: torch.Tensor, lengths: torch.Tensor, key_padding_mask: Optional[torch.Tensor]
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
            x = stack(_convert_num_channels(x, dim), stack_mask, mask)
            outputs.append(x)
        x = self.downsample_output(self._full_dim_output(outputs))
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
    return config


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
        **unknown,
    ):
        super().__init__()
        reject_unknown(NAME, unknown, ["preset", *DEFAULTS])
        given = dict(locals())
        for name in ("self", "__class__", "input_size", "preset", "unknown"):
            given.pop(name, None)
        self.config = self.build_config(preset, **given)
        self.input_size = input_size
        self.encoder_embed = build_subsampling(
            "conv2d_convnext",
            input_size,
            self.config["encoder_dim"][0],
            dropout=ScheduledFloat(*[tuple(point) for point in self.config["dropout_schedule"]]),
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
        return _validate(resolve_config(NAME, PRESETS, DEFAULTS, preset, given))

    def output_size(self) -> int:
        return max(self.config["encoder_dim"])

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
        check_encoder_input(xs_pad, ilens, self.input_size, NAME)
        raise_too_short(NAME, ilens, self.encoder_embed.min_input_length)
        if self.training:
            self._count_optimizer_step()
        xs_pad = xs_pad[:, : int(ilens.max())]
        x, lengths = self.encoder_embed(xs_pad, ilens)
        padding = make_pad_mask(lengths, x.size(1))
        # without padding every mask operation is a no-op: skip them all (one check per forward)
        x, olens = self.encoder(x, lengths, padding if bool(padding.any()) else None)
        return x, olens, None
