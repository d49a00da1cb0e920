"""The encoder catalogue of the benchmark: ``name:preset`` -> a constructed encoder.

Every encoder is built through ESPnet's own registry (``espnet2.tasks.asr.encoder_choices``), exactly as a training
config would build it, so the plugin's encoders are measured as ESPnet users get them:

* ours (``squeezeformer``, ``hybridformer``, ``zipformer``): ``cls(input_size, preset=preset)``; the valid presets are
  the encoder module's ``PRESETS``. HybridFormer is built in its deploy form (``nsr_mode: deploy``: one depthwise conv
  per block, what ``hybrid-encoders reparameterize`` gives and inference runs), which is the form the paper's speed
  claim is about; its training cells therefore time that structure, not the multi-branch training form;
* ESPnet's ``conformer`` and ``e_branchformer`` at the sizes of ESPnet's LibriSpeech recipes (the ``encoder_conf`` of
  the configs named in :data:`ESPNET_PRESETS`), the baselines our encoders are compared with.

A name may carry ``encoder_conf`` overrides after ``+``: ``zipformer:m+activation_checkpointing=true`` measures
Zipformer-M with activation checkpointing next to the plain one (values are read as YAML).
"""

import dataclasses
import json
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import yaml

PLUGIN = "hybrid-encoders"
ESPNET = "espnet"

_CONFORMER_LS100 = {
    "output_size": 256,
    "attention_heads": 4,
    "linear_units": 1024,
    "num_blocks": 12,
    "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1,
    "attention_dropout_rate": 0.1,
    "input_layer": "conv2d",
    "normalize_before": True,
    "macaron_style": True,
    "rel_pos_type": "latest",
    "pos_enc_layer_type": "rel_pos",
    "selfattention_layer_type": "rel_selfattn",
    "activation_type": "swish",
    "use_cnn_module": True,
    "cnn_module_kernel": 31,
}
_E_BRANCHFORMER_LS100 = {
    "output_size": 256,
    "attention_heads": 4,
    "attention_layer_type": "rel_selfattn",
    "pos_enc_layer_type": "rel_pos",
    "rel_pos_type": "latest",
    "cgmlp_linear_units": 1024,
    "cgmlp_conv_kernel": 31,
    "use_linear_after_conv": False,
    "gate_activation": "identity",
    "num_blocks": 12,
    "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1,
    "attention_dropout_rate": 0.1,
    "input_layer": "conv2d",
    "layer_drop_rate": 0.0,
    "linear_units": 1024,
    "positionwise_layer_type": "linear",
    "use_ffn": True,
    "macaron_ffn": True,
    "merge_conv_kernel": 31,
}

# ESPnet's baselines, named after the recipe whose ``encoder_conf`` they copy (see
# /work/shared/research/espnet_integration.md §6.3):
#   conformer:ls100       egs2/librispeech_100/asr1 train_asr_conformer_lr2e-3_warmup15k_amp_nondeterministic.yaml
#   conformer:ls960       egs2/librispeech/asr1 train_asr_conformer10_hop_length160.yaml
#   e_branchformer:ls100  egs2/librispeech_100/asr1 train_asr_e_branchformer_size256_mlp1024_linear1024_e12_...yaml
#   e_branchformer:ls960  egs2/librispeech/asr1 train_asr_e_branchformer.yaml
ESPNET_PRESETS: Dict[str, Dict[str, dict]] = {
    "conformer": {
        "ls100": _CONFORMER_LS100,
        "ls960": {**_CONFORMER_LS100, "output_size": 512, "attention_heads": 8, "linear_units": 2048},
    },
    "e_branchformer": {
        "ls100": _E_BRANCHFORMER_LS100,
        "ls960": {
            **_E_BRANCHFORMER_LS100,
            "output_size": 512,
            "attention_heads": 8,
            "cgmlp_linear_units": 3072,
            "num_blocks": 17,
            "layer_drop_rate": 0.1,
        },
    },
}

# Our encoders and the preset used when none is named: the sizes the papers compare (Squeezeformer-SM, HybridFormer
# at the Squeezeformer-SM size, Zipformer-M).
PLUGIN_DEFAULT_PRESETS: Dict[str, str] = {"squeezeformer": "sm", "hybridformer": "sm", "zipformer": "m"}
ESPNET_DEFAULT_PRESETS: Dict[str, str] = {"conformer": "ls100", "e_branchformer": "ls100"}

# Keys added to a preset of ours, per encoder (see the module docstring).
PLUGIN_BENCH_OVERRIDES: Dict[str, dict] = {"hybridformer": {"nsr_mode": "deploy"}}

# What `hybrid-encoders bench` measures when no --encoders are given.
DEFAULT_ENCODERS: Tuple[str, ...] = (
    "conformer:ls100",
    "conformer:ls960",
    "e_branchformer:ls100",
    "squeezeformer:sm",
    "hybridformer:sm",
    "zipformer:m",
)


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """One encoder of the catalogue.

    Args:
        name: ESPnet encoder choice (``encoder:`` in a training config), e.g. ``conformer``, ``zipformer``.
        preset: preset name (ours: the encoder's ``PRESETS`` key; ESPnet's: a key of :data:`ESPNET_PRESETS`).
        source: :data:`PLUGIN` or :data:`ESPNET`.
        options: ``encoder_conf`` overrides, ``((key, value), ...)`` (from ``name:preset+key=value``).
    """

    name: str
    preset: str
    source: str
    options: Tuple[Tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        extra = "".join(f"+{key}={json.dumps(value, separators=(',', ':'))}" for key, value in self.options)
        return f"{self.name}:{self.preset}{extra}"

    def config(self) -> dict:
        """The ``encoder_conf`` this spec is built with (without ``input_size``)."""
        if self.source == ESPNET:
            return {**ESPNET_PRESETS[self.name][self.preset], **dict(self.options)}
        return {"preset": self.preset, **PLUGIN_BENCH_OVERRIDES.get(self.name, {}), **dict(self.options)}


def encoder_names() -> List[str]:
    """Every encoder name the catalogue knows, ours first."""
    return list(PLUGIN_DEFAULT_PRESETS) + list(ESPNET_PRESETS)


def encoder_class(name: str) -> type:
    """The class ESPnet's ASR encoder registry holds under ``name`` (imports ``espnet2.tasks.asr``, 10-25 s)."""
    from espnet2.tasks.asr import encoder_choices

    cls = encoder_choices.classes.get(name)
    if cls is None:
        raise ValueError(
            f"encoder '{name}' is not registered in ESPnet's encoder_choices (registered: "
            f"{', '.join(sorted(encoder_choices.classes))}); for our encoders, check `hybrid-encoders doctor` and "
            f"that hybrid_encoders.encoders.{name} imports"
        )
    return cls


def plugin_presets(name: str) -> List[str]:
    """The preset names of one of our encoders: its module's ``PRESETS`` keys (loads the class)."""
    cls = encoder_class(name)
    presets = getattr(cls, "PRESETS", None) or getattr(sys.modules[cls.__module__], "PRESETS", None)
    if not presets:
        raise ValueError(f"encoder '{name}' ({cls.__module__}.{cls.__qualname__}) defines no PRESETS")
    return list(presets)


def _parse_options(text: str, parts: Sequence[str]) -> Tuple[Tuple[str, Any], ...]:
    options = []
    for part in parts:
        key, equals, value = part.partition("=")
        if not equals or not key.strip():
            raise ValueError(
                f"--encoders: '{part}' in '{text}' is not key=value (e.g. zipformer:m+activation_checkpointing=true)"
            )
        options.append((key.strip(), yaml.safe_load(value)))
    return tuple(options)


def parse_encoder(text: str) -> EncoderSpec:
    """Parse ``name[:preset][+key=value ...]`` into an :class:`EncoderSpec`, validating both names.

    Raises:
        ValueError: unknown encoder name (lists the valid ones), unknown preset (lists the encoder's presets), or an
            override that is not ``key=value``. Unknown keys fail when the encoder is built, naming the key.
    """
    base, *option_parts = text.strip().split("+")
    options = _parse_options(text, option_parts)
    name, _, preset = base.partition(":")
    name = name.lower()
    if name in ESPNET_PRESETS:
        preset = preset or ESPNET_DEFAULT_PRESETS[name]
        valid = list(ESPNET_PRESETS[name])
        source = ESPNET
    elif name in PLUGIN_DEFAULT_PRESETS:
        preset = preset or PLUGIN_DEFAULT_PRESETS[name]
        valid = plugin_presets(name)
        source = PLUGIN
    else:
        raise ValueError(f"--encoders: unknown encoder '{name}' in '{text}'; valid encoders: {', '.join(encoder_names())}")
    if preset not in valid:
        raise ValueError(f"--encoders: unknown preset '{preset}' for encoder '{name}'; valid presets: {', '.join(valid)}")
    return EncoderSpec(name=name, preset=preset, source=source, options=options)


def parse_encoders(texts: Optional[Sequence[str]]) -> Tuple[List[EncoderSpec], List[str]]:
    """Parse the ``--encoders`` list (entries may also be comma-separated).

    Without ``texts`` the :data:`DEFAULT_ENCODERS` that can be built here are returned, and a note for each one that
    cannot (one of ours not registered yet, say) instead of an error.

    Returns:
        ``(specs, notes)``; duplicates are dropped, order is kept.
    """
    notes = []
    specs: List[EncoderSpec] = []
    if texts:
        for text in (part for entry in texts for part in entry.split(",") if part.strip()):
            spec = parse_encoder(text)
            if spec not in specs:
                specs.append(spec)
        return specs, notes
    for text in DEFAULT_ENCODERS:
        try:
            specs.append(parse_encoder(text))
        except ValueError as error:
            notes.append(f"{text} left out: {error}")
    return specs, notes


def build_encoder(spec: EncoderSpec, input_size: int) -> torch.nn.Module:
    """Construct the encoder of ``spec`` for ``input_size``-dim features through ESPnet's registry."""
    return encoder_class(spec.name)(input_size=input_size, **spec.config())
