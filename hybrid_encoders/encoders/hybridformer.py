"""HybridFormer encoder (Yang, Pan et al., "HybridFormer: Improving SqueezeFormer with Hybrid Attention and NSR
Mechanism", ICASSP 2023, arXiv 2303.08636) for ESPnet (``encoder: hybridformer``).

HybridFormer is the Squeezeformer backbone (:class:`~hybrid_encoders.encoders.squeezeformer.SqueezeformerEncoder`,
reused unchanged) with two changes named in the paper's abstract:

* **LASA**: some blocks replace the relative-position softmax attention (SA) by kernelised linear attention (LA,
  :class:`~hybrid_encoders.layers.linear_attention.LinearAttention`, RoPE inside), chosen per block by
  ``attention_types``;
* **NSR**: the convolution module's depthwise conv + BatchNorm becomes a re-parameterisable multi-branch conv
  (:class:`~hybrid_encoders.layers.reparam_conv.ReparamDepthwiseConv`): searched with DARTS (``nsr_mode: search``),
  retrained with the selected branches (``train``) and folded into one conv for inference (``deploy``, see
  :meth:`HybridformerEncoder.reparameterize` and ``hybrid-encoders reparameterize``).

The paper body is not public, so the following defaults are **our choices** (docs/hybridformer.md gives the reasons):

* ``attention_types: by_rate``: LA in the blocks that run at the full 40 ms frame rate (where the quadratic SA cost is
  largest), SA in the time-reduced blocks of the Temporal U-Net; without the U-Net every block is full-rate, so LA;
* LA: ``relu`` feature map, RoPE on the first d_k / 2 channels per head, rotated denominator (the authors' code);
* ``nsr_mode: train`` with the only searched branch list in the authors' code, kernels ``[3, 4, 5, 2, 6]`` with scales
  ``[0.546, 0.291, 0.098, 0.034, 0.031]``, in every block;
* ``nsr_candidates: [0, 2, 3, 4, 5, 6]`` for the search (identity-BN plus the kernels of that list);
* the Squeezeformer backbone keeps our Squeezeformer's defaults (the paper's TF configuration, no GLU).
"""

import copy
from typing import Any, Dict, List, Optional, Sequence, Union

from torch import nn

from hybrid_encoders.encoders.config import require_choice, require_length, require_positive
from hybrid_encoders.encoders.squeezeformer import SqueezeformerEncoder
from hybrid_encoders.layers.linear_attention import DENOMINATORS, FEATURE_MAPS, LinearAttention
from hybrid_encoders.layers.reparam_conv import ReparamDepthwiseConv, check_branch_kernels

ATTENTION_TYPES = ("linear", "softmax")
ATTENTION_LAYOUTS = ("by_rate", "linear", "softmax")  # compact forms of attention_types
NSR_MODES = ("off", "search", "train", "deploy")

# The one searched result in the authors' code (rep_conv.py): five branches and their softmax weights.
AUTHORS_REP_LIST = [3, 4, 5, 2, 6]
AUTHORS_REP_ALPHAS = [0.546, 0.291, 0.098, 0.034, 0.031]


class HybridformerEncoder(SqueezeformerEncoder):
    """HybridFormer encoder: Squeezeformer + per-block linear/softmax attention + NSR depthwise convolutions.

    Every key defaults to ``None``: the value of ``preset`` if it sets the key, else the base default of
    :attr:`DEFAULTS`. All Squeezeformer keys (``output_size``, ``num_blocks``, ``cnn_module_kernel``,
    ``time_reduce_idx``, ``interctc_layer_idx``, ...) are accepted and mean the same; ``attention_dropout_rate``
    applies to the softmax blocks only (linear attention forms no attention weights; the authors' has no dropout).

    Args:
        input_size: feature dimension of the input (80 for fbank).
        preset: ``s``, ``sm`` or ``m``: the Squeezeformer sizes of the same name.
        attention_types: per block ``"linear"`` or ``"softmax"`` (a list of ``num_blocks`` entries), or a compact
            form: ``"by_rate"`` (LA at the full frame rate, SA in the time-reduced blocks; default), ``"linear"``
            (LA everywhere) or ``"softmax"`` (SA everywhere, i.e. Squeezeformer's attention).
        linear_attention_feature_map: LA kernel feature map, ``"relu"`` (default) or ``"elu_plus_one"``.
        linear_attention_rope_dim: RoPE channels per head (even, <= d_k); default d_k // 2; 0 disables RoPE.
        linear_attention_rope_theta: RoPE base (10000).
        linear_attention_denominator: ``"rotated"`` (default, the authors') or ``"unrotated"`` (RoFormer §3.3).
        nsr_mode: ``"off"`` (Squeezeformer's conv), ``"search"``, ``"train"`` (default) or ``"deploy"``.
        nsr_candidates: search mode: branch kernel sizes searched in every block (0 = identity-BN).
        nsr_rep_list: train mode: kept branch kernel sizes, one list for all blocks or a list of ``num_blocks`` lists.
        nsr_rep_alphas: train mode: fixed branch scales, shaped like ``nsr_rep_list``; default: the authors' searched
            weights when ``nsr_rep_list`` is their list ``[3, 4, 5, 2, 6]``, else 1.0 for every branch.
        **squeezeformer_config: the backbone's keys, see :class:`SqueezeformerEncoder`.
    """

    NAME = "hybridformer"

    DEFAULTS: Dict[str, Any] = {
        **SqueezeformerEncoder.DEFAULTS,
        "attention_types": "by_rate",
        "linear_attention_feature_map": "relu",
        "linear_attention_rope_dim": None,
        "linear_attention_rope_theta": 10000.0,
        "linear_attention_denominator": "rotated",
        "nsr_mode": "train",
        "nsr_candidates": [0, 2, 3, 4, 5, 6],
        "nsr_rep_list": AUTHORS_REP_LIST,
        "nsr_rep_alphas": None,
    }

    PRESETS: Dict[str, Dict[str, Any]] = {size: SqueezeformerEncoder.PRESETS[size] for size in ("s", "sm", "m")}

    def __init__(
        self,
        input_size: int,
        preset: Optional[str] = None,
        attention_types: Optional[Union[str, List[str]]] = None,
        linear_attention_feature_map: Optional[str] = None,
        linear_attention_rope_dim: Optional[int] = None,
        linear_attention_rope_theta: Optional[float] = None,
        linear_attention_denominator: Optional[str] = None,
        nsr_mode: Optional[str] = None,
        nsr_candidates: Optional[List[int]] = None,
        nsr_rep_list: Optional[Union[List[int], List[List[int]]]] = None,
        nsr_rep_alphas: Optional[Union[List[float], List[List[float]]]] = None,
        **squeezeformer_config,
    ):
        super().__init__(
            input_size,
            preset,
            attention_types=attention_types,
            linear_attention_feature_map=linear_attention_feature_map,
            linear_attention_rope_dim=linear_attention_rope_dim,
            linear_attention_rope_theta=linear_attention_rope_theta,
            linear_attention_denominator=linear_attention_denominator,
            nsr_mode=nsr_mode,
            nsr_candidates=nsr_candidates,
            nsr_rep_list=nsr_rep_list,
            nsr_rep_alphas=nsr_rep_alphas,
            **squeezeformer_config,
        )

    # ----- configuration ---------------------------------------------------------------------------------------

    @classmethod
    def _complete_config(cls, config: Dict[str, Any]) -> None:
        """Expand the compact forms (in place): ``attention_types`` to a per-block list, the NSR lists to per-block
        lists, ``nsr_rep_alphas`` and ``linear_attention_rope_dim`` to their defaults."""
        super()._complete_config(config)
        num_blocks = config["num_blocks"]
        layout = config["attention_types"]
        if isinstance(layout, str):
            require_choice(cls.NAME, "attention_types", layout, ATTENTION_LAYOUTS)
            config["attention_types"] = [cls._layout_type(layout, index, config) for index in range(num_blocks)]
        else:  # a list: resolve_config has checked the type
            config["attention_types"] = list(layout)
        heads = config["attention_heads"]
        if config["linear_attention_rope_dim"] is None and isinstance(heads, int) and heads > 0:
            config["linear_attention_rope_dim"] = config["output_size"] // heads // 2
        if isinstance(config["nsr_candidates"], (list, tuple)):  # a copy: never alias the DEFAULTS list
            config["nsr_candidates"] = list(config["nsr_candidates"])
        rep_list, alphas = config["nsr_rep_list"], config["nsr_rep_alphas"]
        config["nsr_rep_list"] = cls._per_block(config, "nsr_rep_list", rep_list)
        if alphas is None and rep_list == AUTHORS_REP_LIST:
            alphas = AUTHORS_REP_ALPHAS  # the searched weights that belong to the authors' list
        if alphas is None:
            config["nsr_rep_alphas"] = [[1.0] * len(kernels) for kernels in config["nsr_rep_list"]]
        else:
            config["nsr_rep_alphas"] = cls._per_block(config, "nsr_rep_alphas", alphas)

    @staticmethod
    def _layout_type(layout: str, index: int, config: Dict[str, Any]) -> str:
        if layout != "by_rate":
            return layout
        reduce_idx, recover_idx = config["time_reduce_idx"], config["time_recover_idx"]
        if not config["temporal_unet"] or not isinstance(reduce_idx, int) or not isinstance(recover_idx, int):
            return "linear"  # no reduced stretch (bad indices are reported by the backbone's validation)
        return "softmax" if reduce_idx <= index < recover_idx else "linear"

    @classmethod
    def _per_block(cls, config: Dict[str, Any], key: str, value: Sequence) -> List[list]:
        """One list for every block -> ``num_blocks`` copies; a list of lists -> checked for its length (which of the
        two it is, and nothing mixed, resolve_config has checked against the constructor's annotation)."""
        if value and all(isinstance(entry, (list, tuple)) for entry in value):
            require_length(cls.NAME, key, value, config["num_blocks"], "num_blocks")
            return [list(entry) for entry in value]
        return [list(value) for _ in range(config["num_blocks"])]

    @classmethod
    def _validate_config(cls, config: Dict[str, Any]) -> None:
        super()._validate_config(config)
        name = cls.NAME
        require_length(name, "attention_types", config["attention_types"], config["num_blocks"], "num_blocks")
        for kind in config["attention_types"]:
            require_choice(name, "attention_types entries", kind, ATTENTION_TYPES)
        require_choice(name, "linear_attention_feature_map", config["linear_attention_feature_map"], FEATURE_MAPS)
        require_choice(name, "linear_attention_denominator", config["linear_attention_denominator"], DENOMINATORS)
        require_positive(name, "linear_attention_rope_theta", config["linear_attention_rope_theta"])
        d_k = config["output_size"] // config["attention_heads"]
        rope_dim = config["linear_attention_rope_dim"]
        if not 0 <= rope_dim <= d_k or rope_dim % 2:
            raise ValueError(
                f"{name}: linear_attention_rope_dim must be an even int in [0, d_k={d_k}] (0 = no RoPE), "
                f"got {rope_dim!r}"
            )
        require_choice(name, "nsr_mode", config["nsr_mode"], NSR_MODES)
        kernel = config["cnn_module_kernel"]
        check_branch_kernels(name, "nsr_candidates", config["nsr_candidates"], kernel)
        if config["nsr_mode"] == "search" and not config["nsr_candidates"]:
            raise ValueError(f"{name}: nsr_mode 'search' needs a non-empty nsr_candidates list")
        for kernels, alphas in zip(config["nsr_rep_list"], config["nsr_rep_alphas"]):
            check_branch_kernels(name, "nsr_rep_list", kernels, kernel)
            require_length(name, "nsr_rep_alphas", alphas, len(kernels), "nsr_rep_list")

    # ----- construction hooks ----------------------------------------------------------------------------------

    def _build_attention(self, block_index: int, config: Dict[str, Any]) -> nn.Module:
        if config["attention_types"][block_index] == "softmax":
            return super()._build_attention(block_index, config)
        return LinearAttention(
            config["attention_heads"],
            config["output_size"],
            feature_map=config["linear_attention_feature_map"],
            rope_dim=config["linear_attention_rope_dim"],
            rope_theta=config["linear_attention_rope_theta"],
            denominator=config["linear_attention_denominator"],
        )

    def _build_depthwise(self, block_index: int, channels: int, kernel_size: int, config: Dict[str, Any]) -> nn.Module:
        if config["nsr_mode"] == "off":
            return super()._build_depthwise(block_index, channels, kernel_size, config)
        return ReparamDepthwiseConv(
            channels,
            kernel_size,
            mode=config["nsr_mode"],
            candidates=config["nsr_candidates"],
            rep_list=config["nsr_rep_list"][block_index],
            rep_alphas=config["nsr_rep_alphas"][block_index],
        )

    # ----- NSR workflow: search -> export -> train -> reparameterize ---------------------------------------------

    def _nsr_convs(self) -> List[ReparamDepthwiseConv]:
        if self.config["nsr_mode"] == "off":
            return []
        return [block.conv_module.depthwise for block in self.encoders]

    def arch_parameters(self) -> List[nn.Parameter]:
        """The NSR architecture logits α of every block (search mode; empty otherwise), for their own optimizer."""
        return [parameter for conv in self._nsr_convs() for parameter in conv.arch_parameters()]

    def weight_parameters(self) -> List[nn.Parameter]:
        """Every parameter except the architecture logits (the two lists are disjoint and cover the encoder)."""
        arch = {id(parameter) for parameter in self.arch_parameters()}
        return [parameter for parameter in self.parameters() if id(parameter) not in arch]

    def export_nsr(self, top_k: Optional[int] = None) -> Dict[str, Any]:
        """Search mode: the encoder_conf keys for the train stage, from the searched α of every block.

        Args:
            top_k: branches kept per block, heaviest first; None keeps every candidate (the authors' example).

        Returns:
            ``{"nsr_mode": "train", "nsr_rep_list": [[k, ...] per block], "nsr_rep_alphas": [[a, ...] per block]}``;
            merge it into ``encoder_conf`` and train from scratch (the authors' flow).
        """
        mode = self.config["nsr_mode"]
        if mode != "search":
            raise RuntimeError(f"{self.NAME}: export_nsr() needs nsr_mode 'search', this encoder has {mode!r}")
        exported = [conv.export(top_k) for conv in self._nsr_convs()]
        return {
            "nsr_mode": "train",
            "nsr_rep_list": [entry["rep_list"] for entry in exported],
            "nsr_rep_alphas": [entry["rep_alphas"] for entry in exported],
        }

    def reparameterize(self) -> Dict[str, Any]:
        """Fold every NSR conv into one depthwise conv with bias, in place (exact for BatchNorm in eval mode).

        Returns:
            The encoder_conf of the deploy-mode encoder (complete, without ``input_size``): building an encoder from
            it gives the same modules, so this encoder's ``state_dict()`` loads into it with no missing or unexpected
            keys. With ``nsr_mode: off`` nothing changes and the conf is returned as is.
        """
        if self.config["nsr_mode"] != "off":
            for conv in self._nsr_convs():
                conv.reparameterize()
            self.config["nsr_mode"] = "deploy"
        return copy.deepcopy(self.config)

