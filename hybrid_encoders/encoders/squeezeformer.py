"""Squeezeformer encoder (Kim et al., "Squeezeformer: An Efficient Transformer for Automatic Speech Recognition",
NeurIPS 2022), faithful to the paper's official TF code and to NeMo's parameter-exact port of it.

    fbank (B, T, 80) -> depthwise-separable 4x subsampling -> x sqrt(d) -> dropout -> LayerNorm
      -> blocks 0 .. r-1                      (40 ms frames)
      -> time reduction (x 1/2) -> blocks r .. n-2   (80 ms; positional encodings recomputed at that rate)
      -> time recovery (x 2, + skip)  -> block n-1   (40 ms)            -> (B, T/4, d)

Each block is MHSA -> FFN -> Conv -> FFN (paper Sec. 3.2, "MF/CF"); every module gets ``scale * x + bias`` as input
and is followed by dropout, the residual addition and a LayerNorm (Sec. 3.3.2, "scaled post-LN"). The defaults
r = n/2 - 1 and recovery before the last block are the paper's (TF ``encoder_time_reduce_idx/recover_idx``).

Subclasses (HybridFormer) extend :attr:`SqueezeformerEncoder.DEFAULTS` / :attr:`SqueezeformerEncoder.PRESETS`,
override :meth:`SqueezeformerEncoder._validate_config`, and replace modules through
:meth:`SqueezeformerEncoder._build_attention` and :meth:`SqueezeformerEncoder._build_depthwise`.
"""

import math
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder
from torch import nn

from hybrid_encoders.encoders.config import (
    check_types,
    constructor_types,
    require_divisible,
    require_odd,
    require_positive,
    require_probability,
    resolve_config,
)
from hybrid_encoders.layers.checkpointing import checkpointed
from hybrid_encoders.layers.conv_module import ConvolutionModule, DepthwiseConvNorm
from hybrid_encoders.layers.export_mode import is_exporting
from hybrid_encoders.layers.feed_forward import FeedForward
from hybrid_encoders.layers.lean_autograd import Dropout
from hybrid_encoders.layers.masking import make_pad_mask, prepare_encoder_input, raise_too_short
from hybrid_encoders.layers.rel_attention import RelPositionMultiHeadedAttention
from hybrid_encoders.layers.rel_positional import RelPositionalEncoding
from hybrid_encoders.layers.scale_bias import ScaleBias
from hybrid_encoders.layers.subsampling import build_subsampling
from hybrid_encoders.layers.time_reduction import TimeReduction, TimeRecovery


class SqueezeformerBlock(nn.Module):
    """One MF/CF block: four (scale-bias -> module -> dropout -> residual -> LayerNorm) steps.

    Args:
        d_model: model dimension d.
        attention: self-attention module, called ``attention(q, k, v, pos_emb, mask) -> (B, T, d)``.
        conv_module: :class:`~hybrid_encoders.layers.conv_module.ConvolutionModule`-like, ``(x, mask) -> x``.
        linear_units: hidden size of the two feed-forward modules.
        dropout_rate: dropout on every module output and inside the feed-forward modules.
    """

    def __init__(
        self, d_model: int, attention: nn.Module, conv_module: nn.Module, linear_units: int, dropout_rate: float
    ):
        super().__init__()
        self.self_attn_scale = ScaleBias(d_model)
        self.self_attn = attention
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.feed_forward1_scale = ScaleBias(d_model)
        self.feed_forward1 = FeedForward(d_model, linear_units, dropout_rate)
        self.feed_forward1_norm = nn.LayerNorm(d_model)
        self.conv_scale = ScaleBias(d_model)
        self.conv_module = conv_module
        self.conv_norm = nn.LayerNorm(d_model)
        self.feed_forward2_scale = ScaleBias(d_model)
        self.feed_forward2 = FeedForward(d_model, linear_units, dropout_rate)
        self.feed_forward2_norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout_rate)  # saves a bool mask for backward, not a float one

    def reset_parameters(self) -> None:
        for module in self.children():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        """Run the block.

        Args:
            x: (B, T, d).
            mask: (B, 1, T) bool, True at valid frames.
            pos_emb: (1, 2T - 1, d) relative positional encodings.

        Returns:
            (B, T, d).
        """
        z = self.self_attn_scale(x)
        x = self.self_attn_norm(x + self.dropout(self.self_attn(z, z, z, pos_emb, mask)))
        x = self.feed_forward1_norm(x + self.dropout(self.feed_forward1(self.feed_forward1_scale(x))))
        x = self.conv_norm(x + self.dropout(self.conv_module(self.conv_scale(x), mask)))
        return self.feed_forward2_norm(x + self.dropout(self.feed_forward2(self.feed_forward2_scale(x))))


class SqueezeformerEncoder(AbsEncoder):
    """Squeezeformer encoder for ESPnet (``encoder: squeezeformer``).

    Every key defaults to ``None``: the value of ``preset`` if it sets the key, else the base default of
    :attr:`DEFAULTS` (the SM model).

    Args:
        input_size: feature dimension of the input (80 for fbank).
        preset: one of ``xs, s, sm, m, ml, l`` (paper Table 3 sizes, see :attr:`PRESETS`), or None.
        output_size: model dimension d.
        attention_heads: number of attention heads (d must be divisible by it).
        linear_units: feed-forward hidden size; default 4 d.
        num_blocks: number of blocks n.
        dropout_rate: dropout after the input scaling, on every module output and inside the feed-forward modules.
        attention_dropout_rate: dropout on the attention weights (0 in the paper's TF code, 0.1 in NeMo's recipe).
        cnn_module_kernel: odd depthwise kernel size of the convolution module (31).
        conv_glu: use the Conformer/WeNet GLU convolution module (d channels) instead of the paper's Swish (2d).
        subsampling_channels: channels of the subsampling convolutions; default d.
        temporal_unet: use the Temporal U-Net (time reduction and recovery).
        time_reduce_idx: block index (0-based) whose input is time-reduced; default n/2 - 1.
        time_recover_idx: block index whose input is time-recovered; default n - 1 (the last block).
        interctc_layer_idx: 1-based block numbers whose outputs feed intermediate CTC (ESPnet convention); they
            must run at the full frame rate (not inside the reduced stretch).
        interctc_use_conditioning: add ``conditioning_layer(ctc.softmax(h))`` back to those outputs (self-conditioned
            CTC); ESPnet's ``ESPnetASRModel`` creates ``encoder.conditioning_layer``.
        activation_checkpointing: keep only each block's input for the backward pass and recompute its activations
            there (:mod:`hybrid_encoders.layers.checkpointing`): most of the training memory of the blocks for about
            one more forward pass, same random draws and gradients. Default False.
    """

    NAME = "squeezeformer"

    DEFAULTS: Dict[str, Any] = {
        "output_size": 256,
        "attention_heads": 4,
        "linear_units": None,
        "num_blocks": 16,
        "dropout_rate": 0.1,
        "attention_dropout_rate": 0.0,
        "cnn_module_kernel": 31,
        "conv_glu": False,
        "subsampling_channels": None,
        "temporal_unet": True,
        "time_reduce_idx": None,
        "time_recover_idx": None,
        "interctc_layer_idx": [],
        "interctc_use_conditioning": False,
        "activation_checkpointing": False,
    }

    # Paper Table 3 / TF configs squeezeformer-{XS,...,L}.yml; all use 4 d feed-forward, kernel 31 and the default
    # U-Net indices n/2 - 1 and n - 1.
    PRESETS: Dict[str, Dict[str, Any]] = {
        "xs": {"output_size": 144, "attention_heads": 4, "num_blocks": 16},
        "s": {"output_size": 196, "attention_heads": 4, "num_blocks": 18},
        "sm": {"output_size": 256, "attention_heads": 4, "num_blocks": 16},
        "m": {"output_size": 324, "attention_heads": 4, "num_blocks": 20},
        "ml": {"output_size": 512, "attention_heads": 8, "num_blocks": 18},
        "l": {"output_size": 640, "attention_heads": 8, "num_blocks": 22},
    }

    def __init__(
        self,
        input_size: int,
        preset: Optional[str] = None,
        output_size: Optional[int] = None,
        attention_heads: Optional[int] = None,
        linear_units: Optional[int] = None,
        num_blocks: Optional[int] = None,
        dropout_rate: Optional[float] = None,
        attention_dropout_rate: Optional[float] = None,
        cnn_module_kernel: Optional[int] = None,
        conv_glu: Optional[bool] = None,
        subsampling_channels: Optional[int] = None,
        temporal_unet: Optional[bool] = None,
        time_reduce_idx: Optional[int] = None,
        time_recover_idx: Optional[int] = None,
        interctc_layer_idx: Optional[List[int]] = None,
        interctc_use_conditioning: Optional[bool] = None,
        activation_checkpointing: Optional[bool] = None,
        **extra_config,
    ):
        super().__init__()
        given = dict(
            output_size=output_size,
            attention_heads=attention_heads,
            linear_units=linear_units,
            num_blocks=num_blocks,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            cnn_module_kernel=cnn_module_kernel,
            conv_glu=conv_glu,
            subsampling_channels=subsampling_channels,
            temporal_unet=temporal_unet,
            time_reduce_idx=time_reduce_idx,
            time_recover_idx=time_recover_idx,
            interctc_layer_idx=interctc_layer_idx,
            interctc_use_conditioning=interctc_use_conditioning,
            activation_checkpointing=activation_checkpointing,
            **extra_config,
        )
        check_types(self.NAME, {"input_size": input_size}, constructor_types(type(self)))
        require_positive(self.NAME, "input_size", input_size)
        config = self.build_config(preset, **given)
        self.config = config
        self.input_size = input_size
        d_model = config["output_size"]
        self._output_size = d_model

        self.embed = build_subsampling("dw_striding", input_size, d_model, channels=config["subsampling_channels"])
        # x sqrt(d) before the dropout and pre-LN as in TF/NeMo; with a LayerNorm next it only changes the LN's
        # effective epsilon, but it is kept for exactness.
        self.xscale = math.sqrt(d_model)
        self.input_dropout = Dropout(config["dropout_rate"])
        self.pre_ln = nn.LayerNorm(d_model)
        self.pos_enc = RelPositionalEncoding(d_model)
        self.encoders = nn.ModuleList(self._build_block(index, config) for index in range(config["num_blocks"]))
        if config["temporal_unet"]:
            self.time_reduction = TimeReduction(d_model)
            self.time_recovery = TimeRecovery(d_model)
            self.time_reduce_idx = config["time_reduce_idx"]
            self.time_recover_idx = config["time_recover_idx"]
        else:
            self.time_reduce_idx = self.time_recover_idx = None
        self.interctc_layer_idx = list(config["interctc_layer_idx"])
        self.interctc_use_conditioning = config["interctc_use_conditioning"]
        self.activation_checkpointing = config["activation_checkpointing"]
        self.conditioning_layer = None

    # ----- configuration ---------------------------------------------------------------------------------------

    @classmethod
    def build_config(cls, preset: Optional[str] = None, **given) -> Dict[str, Any]:
        """The complete configuration for ``preset`` and the explicitly given keys: defaults < preset < given,
        derived defaults filled in (``linear_units``, ``subsampling_channels``, U-Net indices), validated.

        Raises:
            ValueError: unknown preset or key, or an invalid value (the message names the key).
        """
        config = resolve_config(cls.NAME, cls.PRESETS, cls.DEFAULTS, preset, given, constructor_types(cls))
        cls._complete_config(config)
        cls._validate_config(config)
        return config

    @classmethod
    def _complete_config(cls, config: Dict[str, Any]) -> None:
        """Fill in the defaults that depend on other keys (in place)."""
        for key in ("output_size", "num_blocks"):  # the types are checked already (resolve_config)
            require_positive(cls.NAME, key, config[key])
        d_model, num_blocks = config["output_size"], config["num_blocks"]
        if config["linear_units"] is None:
            config["linear_units"] = 4 * d_model
        if config["subsampling_channels"] is None:
            config["subsampling_channels"] = d_model
        if config["temporal_unet"]:
            if config["time_reduce_idx"] is None:
                config["time_reduce_idx"] = num_blocks // 2 - 1
            if config["time_recover_idx"] is None:
                config["time_recover_idx"] = num_blocks - 1
        config["interctc_layer_idx"] = list(config["interctc_layer_idx"])

    @classmethod
    def _validate_config(cls, config: Dict[str, Any]) -> None:
        """Raise a ValueError naming the first invalid key; subclasses call ``super()`` and check their own keys."""
        name = cls.NAME
        for key in ("attention_heads", "linear_units", "cnn_module_kernel", "subsampling_channels"):
            require_positive(name, key, config[key])
        require_divisible(name, "output_size", config["output_size"], "attention_heads", config["attention_heads"])
        require_divisible(name, "output_size", config["output_size"], "2 (sinusoidal positions)", 2)
        require_odd(name, "cnn_module_kernel", config["cnn_module_kernel"])
        for key in ("dropout_rate", "attention_dropout_rate"):
            require_probability(name, key, config[key])
        num_blocks = config["num_blocks"]
        if config["temporal_unet"]:
            reduce_idx, recover_idx = config["time_reduce_idx"], config["time_recover_idx"]
            for key in ("time_reduce_idx", "time_recover_idx"):
                if not isinstance(config[key], int) or not 0 <= config[key] < num_blocks:
                    raise ValueError(f"{name}: {key} must be a block index in [0, {num_blocks}), got {config[key]!r}")
            if reduce_idx >= recover_idx:
                raise ValueError(
                    f"{name}: time_reduce_idx={reduce_idx} must be smaller than time_recover_idx={recover_idx}"
                )
        for layer in config["interctc_layer_idx"]:
            if not isinstance(layer, int) or not 0 < layer < num_blocks:
                raise ValueError(
                    f"{name}: interctc_layer_idx entries must be block numbers in [1, {num_blocks}), got {layer!r}"
                )
            if config["temporal_unet"] and config["time_reduce_idx"] < layer <= config["time_recover_idx"]:
                raise ValueError(
                    f"{name}: interctc_layer_idx={layer} is a block output inside the time-reduced stretch "
                    f"(blocks {config['time_reduce_idx']}..{config['time_recover_idx'] - 1}); CTC needs full-rate frames"
                )

    # ----- construction hooks (overridden by HybridFormer) ------------------------------------------------------

    def _build_block(self, block_index: int, config: Dict[str, Any]) -> SqueezeformerBlock:
        d_model = config["output_size"]
        conv_module = ConvolutionModule(
            d_model,
            lambda channels: self._build_depthwise(block_index, channels, config["cnn_module_kernel"], config),
            glu=config["conv_glu"],
        )
        attention = self._build_attention(block_index, config)
        return SqueezeformerBlock(d_model, attention, conv_module, config["linear_units"], config["dropout_rate"])

    def _build_attention(self, block_index: int, config: Dict[str, Any]) -> nn.Module:
        """The self-attention of block ``block_index``: called ``(q, k, v, pos_emb, mask) -> (B, T, d)``.

        Called during ``__init__`` (subclass attributes set after ``super().__init__()`` are not there yet; use
        ``config``). A module with ``reset_parameters()`` is re-initialised by :meth:`espnet_initialization_fn`.
        """
        return RelPositionMultiHeadedAttention(
            config["attention_heads"], config["output_size"], config["attention_dropout_rate"]
        )

    def _build_depthwise(self, block_index: int, channels: int, kernel_size: int, config: Dict[str, Any]) -> nn.Module:
        """The "depthwise conv + norm" stage of block ``block_index``'s convolution module: (B, C, T) -> (B, C, T)."""
        return DepthwiseConvNorm(channels, kernel_size)

    # ----- ESPnet interface ------------------------------------------------------------------------------------

    def output_size(self) -> int:
        return self._output_size

    def reset_parameters(self) -> None:
        """Paper (TF) initialisation of every layer (research note Sec. 2.6)."""
        for module in (self.embed, self.pre_ln, *self.encoders):
            module.reset_parameters()
        if self.time_reduce_idx is not None:
            self.time_reduction.reset_parameters()
            self.time_recovery.reset_parameters()

    def espnet_initialization_fn(self) -> None:
        """Called by ESPnet's ``initialize`` after its generic ``init:`` scheme: restore the paper's initialisation
        (the generic schemes would, e.g., give the relative-position biases u, v random values and re-draw the
        scale layers' parameters that the paper starts at the identity)."""
        self.reset_parameters()

    def forward(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        prev_states: Optional[torch.Tensor] = None,
        ctc: Optional[nn.Module] = None,
    ) -> Tuple[Union[torch.Tensor, Tuple[torch.Tensor, List[Tuple[int, torch.Tensor]]]], torch.Tensor, None]:
        """Encode.

        Args:
            xs_pad: (B, T, input_size) padded features.
            ilens: (B,) valid lengths.
            prev_states: unused (ESPnet interface).
            ctc: ESPnet's CTC module, needed with ``interctc_use_conditioning``.

        Returns:
            ``(xs (B, T', d), olens (B,), None)`` with ``T' == max(olens)`` and ``olens = ceil(ceil(ilens/2)/2)``;
            with intermediate CTC the first item is ``(xs, [(block_number, (B, T', d)), ...])``.

        Raises:
            TooShortUttError: an input has fewer frames than the subsampling needs (ESPnet's exception).
            ValueError: wrong feature size or dimensions, NaN/Inf in valid frames, inconsistent lengths.
        """
        xs_pad = prepare_encoder_input(xs_pad, ilens, self.input_size, self.NAME, next(self.parameters()).dtype)
        if self.interctc_use_conditioning and self.interctc_layer_idx and ctc is None:
            raise ValueError(f"{self.NAME}: interctc_use_conditioning needs the ctc module passed to forward()")
        raise_too_short(self.NAME, ilens, self.embed.min_input_length)
        if not is_exporting():  # an exported graph has no value-dependent shapes: it keeps the padding
            xs_pad = xs_pad[:, : int(ilens.max())]  # extra padding would only add frames beyond max(olens)
        x, olens = self.embed(xs_pad, ilens)
        x = self.pre_ln(self.input_dropout(x * self.xscale))
        mask = ~make_pad_mask(olens, x.size(1)).unsqueeze(1)  # (B, 1, T')
        pos_emb = self.pos_enc(x.size(1)).to(x.dtype)
        saved = None
        intermediate_outs = []
        for index, block in enumerate(self.encoders):
            if index == self.time_reduce_idx:
                saved = (x, mask, pos_emb)
                x = self.time_reduction(x, mask)
                mask = mask[:, :, ::2]
                # Fresh encodings for the reduced length: relative distances count 80 ms frames (TF, NeMo).
                pos_emb = self.pos_enc(x.size(1)).to(x.dtype)
            elif index == self.time_recover_idx:
                skip, mask, pos_emb = saved
                x = self.time_recovery(x, skip)
            x = checkpointed(block, x, mask, pos_emb, enabled=self.activation_checkpointing)
            if index + 1 in self.interctc_layer_idx:
                intermediate_outs.append((index + 1, x))
                if self.interctc_use_conditioning:
                    x = x + self.conditioning_layer(ctc.softmax(x))
        if intermediate_outs:
            return (x, intermediate_outs), olens, None
        return x, olens, None
