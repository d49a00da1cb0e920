"""Import NeMo ``SqueezeformerEncoder`` weights (NeMo is a parameter-exact port of the paper's TF code).

Accepted inputs:

* a published ``.nemo`` file (``stt_en_squeezeformer_ctc_*``): a tar holding ``model_weights.ckpt`` (the whole
  model's state dict, encoder keys prefixed ``encoder.``) and ``model_config.yaml`` (its ``encoder`` section is
  the encoder configuration);
* a ``torch.save``'d dict ``{"state_dict": ..., "config": {NeMo encoder keys}}`` or a bare state dict (encoder keys
  with or without the ``encoder.`` prefix); a bare state dict needs the configuration given separately.

The key mapping is one-to-one (research note Sec. 7.2 / 7.3); shapes are identical.
"""

import io
import re
import tarfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import yaml

from hybrid_encoders.convert import write_espnet_encoder
from hybrid_encoders.encoders.squeezeformer import SqueezeformerEncoder

# (NeMo pattern, our replacement), applied in order to every key.
KEY_RENAMES = (
    (r"^pre_encode\.conv\.0\.", "embed.conv1."),
    (r"^pre_encode\.conv\.2\.", "embed.depthwise."),
    (r"^pre_encode\.conv\.3\.", "embed.pointwise."),
    (r"^pre_encode\.out\.", "embed.out."),
    (r"^layers\.(\d+)\.", r"encoders.\1."),
    (r"\.norm_self_att\.", ".self_attn_norm."),
    (r"\.feed_forward([12])\.linear1\.", r".feed_forward\1.w_1."),
    (r"\.feed_forward([12])\.linear2\.", r".feed_forward\1.w_2."),
    (r"\.norm_feed_forward([12])\.", r".feed_forward\1_norm."),
    (r"\.conv\.pointwise_conv([12])\.", r".conv_module.pointwise_conv\1."),
    (r"\.conv\.depthwise_conv\.", ".conv_module.depthwise.conv."),
    (r"\.conv\.batch_norm\.", ".conv_module.depthwise.norm."),
    (r"\.norm_conv\.", ".conv_norm."),
    (r"^time_reduce_layer\.", "time_reduction."),
    (r"^time_recovery_layer\.", "time_recovery.linear."),
)

# NeMo encoder options that must have these values: our encoder implements exactly this variant.
REQUIRED_NEMO_OPTIONS = {
    "subsampling": ("dw_striding",),
    "subsampling_factor": (4,),
    "self_attention_model": ("rel_pos",),
    "conv_norm_type": ("batch_norm",),
    "xscaling": (True,),
    "untie_biases": (True,),
}


def rename_key(nemo_key: str) -> str:
    """One NeMo encoder key (without ``encoder.``) -> our key."""
    key = nemo_key
    for pattern, replacement in KEY_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def convert_state_dict(nemo_state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """NeMo state dict (the encoder's, or a whole model's with ``encoder.`` keys) -> our encoder's state dict."""
    if any(key.startswith("encoder.") for key in nemo_state):
        nemo_state = {key[len("encoder.") :]: value for key, value in nemo_state.items() if key.startswith("encoder.")}
    converted = {rename_key(key): value for key, value in nemo_state.items()}
    for key, value in converted.items():
        if ".conv_module.pointwise_conv" in key and key.endswith(".weight"):
            converted[key] = value.squeeze(-1)  # NeMo's Conv1d (out, in, 1) -> our Linear (out, in)
    return converted


def encoder_config_from_nemo(nemo_config: Mapping[str, Any]) -> Tuple[int, Dict[str, Any]]:
    """NeMo ``encoder`` config -> ``(input_size, our complete encoder_conf)``.

    Raises:
        ValueError: an option our encoder does not implement (named), or a missing required key.
    """
    for key in ("feat_in", "d_model", "n_layers"):
        if key not in nemo_config or not isinstance(nemo_config[key], int):
            raise ValueError(f"NeMo encoder config: {key} must be an int, got {nemo_config.get(key)!r}")
    for key, allowed in REQUIRED_NEMO_OPTIONS.items():
        if key in nemo_config and nemo_config[key] not in allowed:
            raise ValueError(f"NeMo encoder config: {key}={nemo_config[key]!r} is not supported (needs {allowed[0]!r})")
    d_model = nemo_config["d_model"]
    feat_out = nemo_config.get("feat_out", -1)
    if feat_out not in (-1, None, d_model):
        raise ValueError(f"NeMo encoder config: feat_out={feat_out} (an output projection) is not supported")
    channels = nemo_config.get("subsampling_conv_channels", -1)
    reduce_idx = nemo_config.get("time_reduce_idx")
    conf = {
        "output_size": d_model,
        "attention_heads": nemo_config.get("n_heads", 4),
        "linear_units": d_model * nemo_config.get("ff_expansion_factor", 4),
        "num_blocks": nemo_config["n_layers"],
        "dropout_rate": nemo_config.get("dropout", 0.1),
        "attention_dropout_rate": nemo_config.get("dropout_att", 0.1),
        "cnn_module_kernel": nemo_config.get("conv_kernel_size", 31),
        "subsampling_channels": d_model if channels in (-1, None) else channels,
        "temporal_unet": reduce_idx is not None,
        "time_reduce_idx": reduce_idx,
        "time_recover_idx": nemo_config.get("time_recovery_idx"),
    }
    return nemo_config["feat_in"], SqueezeformerEncoder.build_config(**conf)


def _model_config_encoder(model_config: Mapping[str, Any]) -> Dict[str, Any]:
    """The encoder section of a NeMo ``model_config.yaml``, with ``feat_in`` resolved if it is an interpolation."""
    encoder = dict(model_config["encoder"])
    if not isinstance(encoder.get("feat_in"), int):
        encoder["feat_in"] = model_config.get("preprocessor", {}).get("features")
    return encoder


def load_nemo_checkpoint(path: str) -> Tuple[Dict[str, torch.Tensor], Optional[Dict[str, Any]]]:
    """Read ``(state_dict, NeMo encoder config or None)`` from a ``.nemo`` tar or a ``torch.save``'d file."""
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            members = {Path(member.name).name: member for member in archive.getmembers() if member.isfile()}
            for needed in ("model_weights.ckpt", "model_config.yaml"):
                if needed not in members:
                    raise ValueError(f"{path}: not a .nemo archive (no {needed} inside)")
            weights = archive.extractfile(members["model_weights.ckpt"]).read()
            model_config = yaml.safe_load(archive.extractfile(members["model_config.yaml"]).read())
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        return state, _model_config_encoder(model_config)
    content = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(content, dict) and "state_dict" in content:
        return content["state_dict"], content.get("config")
    return content, None


def convert(checkpoint: str, out_dir: str, nemo_config: Optional[Mapping[str, Any]] = None):
    """Convert a NeMo Squeezeformer checkpoint into ``out_dir/encoder.pth`` + ``out_dir/encoder_conf.yaml``.

    The weights are loaded strictly into a :class:`SqueezeformerEncoder` built from the converted configuration
    before anything is written, so a mismatch fails here and not in ESPnet.

    Args:
        checkpoint: ``.nemo`` file or ``torch.save``'d state dict (see the module docstring).
        out_dir: output directory.
        nemo_config: NeMo encoder config, when the checkpoint carries none.

    Returns:
        ``{"weights": path, "config": path}``.
    """
    state, found_config = load_nemo_checkpoint(checkpoint)
    nemo_config = nemo_config if nemo_config is not None else found_config
    if nemo_config is None:
        raise ValueError(f"{checkpoint}: holds no encoder configuration; pass the NeMo encoder config")
    input_size, encoder_conf = encoder_config_from_nemo(nemo_config)
    encoder = SqueezeformerEncoder(input_size, **encoder_conf)
    converted = convert_state_dict(state)
    missing, unexpected = encoder.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint}: does not match a Squeezeformer encoder of that configuration; "
            f"missing keys {sorted(missing)[:5]}, unexpected keys {sorted(unexpected)[:5]}"
        )
    return write_espnet_encoder(
        out_dir, SqueezeformerEncoder.NAME, encoder_conf, encoder.state_dict(), input_size, f"NeMo {checkpoint}"
    )
