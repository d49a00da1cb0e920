"""Import icefall Zipformer (``egs/librispeech/ASR/zipformer``) encoder weights into :class:`ZipformerEncoder`.

Accepted inputs: a raw state dict, or an icefall checkpoint ``{"model": state_dict, ...}`` (``pretrained.pt`` or
``epoch-N.pt``). Only ``encoder_embed.*`` and ``encoder.*`` are used; the transducer / CTC heads are ignored.

Our module tree reproduces icefall's names, so the mapping is: keep every key as it is, except the unused legacy
per-layer ``...layers.{j}.bypass_scale`` (icefall: "TODO: remove it"; the used one is ``layers.{j}.bypass.
bypass_scale``), which our encoder leaves out (it would be an unused parameter under ESPnet's DDP), and add our
``batch_count`` buffer. ESPnet stores the encoder under ``encoder.``, so the written keys read
``encoder.encoder_embed.conv.0.weight``, ``encoder.encoder.encoders.0.layers.0...``.

The encoder configuration is inferred from the tensor shapes (stacks, layers, dimensions, heads, kernels); the
per-head split and ``encoder_unmasked_dim`` (which only matters for training) come from ``preset`` or icefall's
defaults, or from icefall's own ``train.py`` arguments when given (:func:`encoder_conf_from_icefall_args`).

Streaming models (icefall ``--causal 1``) have other convolution weights (``depthwise_conv.causal_conv.*``,
``depthwise_conv.chunkwise_conv.*``, ``depthwise_conv.chunkwise_conv_scale``), which our ``causal: true`` encoder
names alike; their ``chunk_size`` / ``left_context_frames`` training lists are not in the weights and default to
icefall's (16,32,64,-1 and 64,128,256,-1).
"""

import pickle
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from hybrid_encoders.convert import write_espnet_encoder
from hybrid_encoders.encoders.zipformer import DEFAULTS, PER_STACK_KEYS, PRESETS, ZipformerEncoder

INPUT_SIZE = 80  # icefall's fbank dimension (feature_dim)
LEGACY_KEY = re.compile(r"^encoder\.encoders\.\d+\.(encoder\.)?layers\.\d+\.bypass_scale$")
_STACK_KEY = re.compile(r"^encoder\.encoders\.(\d+)\.(?:encoder\.)?layers\.(\d+)\.")

# icefall train.py argument -> our encoder_conf key (same meaning; icefall passes comma-separated strings)
ICEFALL_ARGS = {
    "num_encoder_layers": "num_encoder_layers",
    "downsampling_factor": "downsampling_factor",
    "feedforward_dim": "feedforward_dim",
    "num_heads": "num_heads",
    "encoder_dim": "encoder_dim",
    "encoder_unmasked_dim": "encoder_unmasked_dim",
    "query_head_dim": "query_head_dim",
    "value_head_dim": "value_head_dim",
    "pos_head_dim": "pos_head_dim",
    "pos_dim": "pos_dim",
    "cnn_module_kernel": "cnn_module_kernel",
    "causal": "causal",
    "chunk_size": "chunk_size",
    "left_context_frames": "left_context_frames",
}
_CAUSAL_KEY = ".depthwise_conv.chunkwise_conv.weight"


def extract_encoder_state(checkpoint: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """The ``encoder_embed.*`` / ``encoder.*`` tensors of a raw state dict or an icefall checkpoint.

    Raises:
        ValueError: no encoder tensors.
    """
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, Mapping):
        raise ValueError("icefall checkpoint: 'model' is not a state dict")
    state = {key[len("module.") :] if key.startswith("module.") else key: value for key, value in state.items()}
    encoder_state = {
        key: value
        for key, value in state.items()
        if key.startswith(("encoder_embed.", "encoder.")) and torch.is_tensor(value)
    }
    if not any(key.startswith("encoder.encoders.") for key in encoder_state):
        raise ValueError("icefall checkpoint: no 'encoder.encoders.*' tensors found (is this a Zipformer model?)")
    return encoder_state


def is_causal(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether an icefall encoder state dict is a streaming (``--causal 1``) model's: chunk-causal convolutions."""
    return any(key.endswith(_CAUSAL_KEY) for key in state)


def convert_state_dict(icefall_state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """icefall encoder tensors -> (our encoder state dict without ``batch_count``, dropped legacy keys)."""
    converted, dropped = {}, []
    for key, value in icefall_state.items():
        if LEGACY_KEY.match(key):
            dropped.append(key)
        else:
            converted[key] = value
    return converted, dropped


def _stack_layers(state: Mapping[str, torch.Tensor]) -> Dict[int, int]:
    """{stack index: number of layers} from the keys."""
    layers: Dict[int, int] = {}
    for key in state:
        match = _STACK_KEY.match(key)
        if match:
            stack, layer = int(match.group(1)), int(match.group(2))
            layers[stack] = max(layers.get(stack, 0), layer + 1)
    return layers


def _layer_prefix(stack: int, factor: int) -> str:
    return f"encoder.encoders.{stack}." + ("" if factor == 1 else "encoder.") + "layers.0."


def infer_encoder_conf(state: Mapping[str, torch.Tensor], preset: Optional[str] = None) -> Dict[str, Any]:
    """Our ``encoder_conf`` for a converted state dict, read from its tensor shapes.

    ``pos_head_dim`` and ``encoder_unmasked_dim`` cannot be read from the weights; they come from ``preset`` (or
    icefall's defaults), and the remaining per-head sizes follow from the projections' shapes.

    Raises:
        ValueError: shapes that no Zipformer configuration produces.
    """
    base = dict(DEFAULTS)
    if preset is not None:
        if preset.lower() not in PRESETS:
            raise ValueError(f"icefall-zipformer: unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
        base.update(PRESETS[preset.lower()])
    layers = _stack_layers(state)
    num_stacks = len(layers)
    if sorted(layers) != list(range(num_stacks)):
        raise ValueError(f"icefall-zipformer: stacks {sorted(layers)} are not numbered 0..{num_stacks - 1}")
    conf: Dict[str, List[int]] = {key: [] for key in PER_STACK_KEYS}
    conf["downsampling_factor"] = []
    pos_head_dims = base["pos_head_dim"]
    for stack in range(num_stacks):
        downsample = state.get(f"encoder.encoders.{stack}.downsample.bias")
        factor = 1 if downsample is None else downsample.numel()
        prefix = _layer_prefix(stack, factor)
        dim = state[prefix + "norm.bias"].numel()
        pos_head_dim = pos_head_dims if isinstance(pos_head_dims, int) else pos_head_dims[stack]
        pos_rows = state[prefix + "self_attn_weights.linear_pos.weight"].shape[0]
        heads, remainder = divmod(pos_rows, pos_head_dim)
        attention_rows = state[prefix + "self_attn_weights.in_proj.weight"].shape[0]
        value_rows = state[prefix + "self_attn1.in_proj.weight"].shape[0]
        if remainder or attention_rows % heads or (attention_rows // heads - pos_head_dim) % 2 or value_rows % heads:
            raise ValueError(
                f"icefall-zipformer: stack {stack}: attention shapes ({attention_rows}, {pos_rows}, {value_rows}) do "
                f"not fit pos_head_dim={pos_head_dim}; pass the model's train.py arguments"
            )
        unmasked = base["encoder_unmasked_dim"]
        unmasked = unmasked if isinstance(unmasked, int) else unmasked[stack] if stack < len(unmasked) else dim
        conf["downsampling_factor"].append(factor)
        conf["num_encoder_layers"].append(layers[stack])
        conf["encoder_dim"].append(dim)
        conf["encoder_unmasked_dim"].append(min(unmasked, dim))
        conf["feedforward_dim"].append(state[prefix + "feed_forward2.in_proj.weight"].shape[0])
        conf["num_heads"].append(heads)
        conf["query_head_dim"].append((attention_rows // heads - pos_head_dim) // 2)
        conf["value_head_dim"].append(value_rows // heads)
        conf["pos_head_dim"].append(pos_head_dim)
        kernel_key = "conv_module1.depthwise_conv." + ("chunkwise_conv.weight" if is_causal(state) else "weight")
        conf["cnn_module_kernel"].append(state[prefix + kernel_key].shape[-1])
    result: Dict[str, Any] = dict(conf)
    result["pos_dim"] = state[_layer_prefix(0, 1) + "self_attn_weights.linear_pos.weight"].shape[1]
    result["causal"] = is_causal(state)
    for key in ("query_head_dim", "value_head_dim", "pos_head_dim"):  # one int when uniform, as in icefall
        if len(set(result[key])) == 1:
            result[key] = result[key][0]
    return result


def encoder_conf_from_icefall_args(args: Mapping[str, Any]) -> Dict[str, Any]:
    """icefall ``train.py`` model arguments (``"2,2,3"`` strings or ints; ``causal`` a bool, 0/1 or its string)
    -> our encoder_conf keys.

    Unknown or non-model arguments are ignored.
    """
    conf = {}
    for icefall_key, our_key in ICEFALL_ARGS.items():
        if icefall_key not in args:
            continue
        value = args[icefall_key]
        if our_key == "causal":
            conf["causal"] = str(value).strip().lower() in ("1", "true", "yes")
            continue
        values = int_list(value, icefall_key) if isinstance(value, str) else value
        if isinstance(values, list) and len(values) == 1:
            values = values[0]
        conf[our_key] = values
    return conf


def int_list(value: str, option: str) -> List[int]:
    """``"16,32,64,-1"`` (icefall's comma-separated form) -> [16, 32, 64, -1]; ValueError naming ``option``."""
    try:
        return [int(item) for item in value.split(",")]
    except ValueError:
        raise ValueError(f"icefall-zipformer: {option} must be comma-separated integers, got {value!r}") from None


def load_icefall_encoder(
    checkpoint: Mapping[str, Any],
    preset: Optional[str] = None,
    icefall_args: Optional[Mapping[str, Any]] = None,
    batch_count: Optional[int] = None,
    causal: Optional[bool] = None,
) -> Tuple[ZipformerEncoder, Dict[str, Any]]:
    """Build a :class:`ZipformerEncoder` holding an icefall checkpoint's encoder weights (strict loading).

    Args:
        checkpoint: raw state dict or ``{"model": state_dict, ...}``.
        preset: "s" / "m" / "l": the configuration must then match it exactly.
        icefall_args: the model's ``train.py`` arguments, overriding what is inferred (e.g. encoder_unmasked_dim).
        batch_count: value of the schedules' step counter; default: the checkpoint's ``batch_idx_train`` if present,
            else 0 (schedules restart, as for training from scratch).
        causal: whether the checkpoint must be a streaming (``--causal 1``) model; None: whichever it is.

    Returns:
        (encoder, encoder_conf).

    Raises:
        ValueError: shapes that do not match the preset, a causal model when ``causal`` is False or the reverse,
            missing or unexpected keys (named).
    """
    state, _ = convert_state_dict(extract_encoder_state(checkpoint))
    if causal is not None and causal != is_causal(state):
        raise ValueError(
            "icefall-zipformer: the checkpoint is a streaming (causal) model: pass --causal"
            if is_causal(state)
            else "icefall-zipformer: --causal given, but the checkpoint has no chunk-causal convolutions (not a "
            "--causal 1 model)"
        )
    try:
        conf = infer_encoder_conf(state, preset)
    except KeyError as error:
        raise ValueError(f"icefall-zipformer: the checkpoint lacks {error.args[0]} (an incomplete encoder)") from None
    conf.update(encoder_conf_from_icefall_args(icefall_args or {}))
    if preset is not None:
        streaming = {key: conf[key] for key in ("causal", "chunk_size", "left_context_frames") if key in conf}
        expected = ZipformerEncoder.build_config(preset, **streaming)
        inferred = ZipformerEncoder.build_config(None, **conf)
        mismatched = [key for key in expected if inferred[key] != expected[key]]
        if mismatched:
            raise ValueError(
                f"icefall-zipformer: checkpoint does not match preset {preset!r} in {mismatched}: "
                + ", ".join(f"{key}={inferred[key]} (preset {expected[key]})" for key in mismatched)
            )
        conf = {"preset": preset.lower(), **streaming}
    encoder = ZipformerEncoder(INPUT_SIZE, **conf)
    if batch_count is None:
        batch_count = int(checkpoint.get("batch_idx_train", 0)) if "model" in checkpoint else 0
    state["batch_count"] = torch.tensor(batch_count, dtype=torch.int64)
    try:
        missing, unexpected = encoder.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"icefall-zipformer: {error}") from None
    if missing or unexpected:
        raise ValueError(f"icefall-zipformer: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}")
    return encoder, conf


def convert(
    checkpoint: str,
    out_dir: str,
    preset: Optional[str] = None,
    causal: Optional[bool] = None,
    chunk_size: Optional[str] = None,
    left_context_frames: Optional[str] = None,
) -> Dict[str, Any]:
    """Convert an icefall Zipformer checkpoint file into ``out_dir/encoder.pth`` + ``out_dir/encoder_conf.yaml``.

    The config snippet also needs ``frontend: kaldi_fbank`` and ``normalize: null`` in the ESPnet config, so that
    the model sees the features it was trained on (icefall uses no global normalisation).

    Args:
        checkpoint: icefall ``pretrained.pt`` / ``epoch-N.pt`` or a raw state dict file.
        out_dir: output directory.
        preset: "s" / "m" / "l" to check the weights against.
        causal: the checkpoint must be a streaming model (True) or must not (False); None: either.
        chunk_size, left_context_frames: a streaming model's icefall training lists, e.g. ``"16,32,64,-1"``
            (default icefall's); they become the encoder's training lists, their first entries the decode setting.

    Returns:
        ``{"weights": path, "config": path}``.
    """
    try:
        content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{checkpoint}: holds Python objects besides tensors, which are not unpickled for safety; export the "
            f"model with icefall's export.py (pretrained.pt) or save checkpoint['model'] alone ({error})"
        ) from None
    if not isinstance(content, Mapping):
        raise ValueError(f"{checkpoint}: expected a state dict or an icefall checkpoint dict")
    streaming_args = {
        key: int_list(value, option)
        for key, option, value in (
            ("chunk_size", "--chunk-size", chunk_size),
            ("left_context_frames", "--left-context-frames", left_context_frames),
        )
        if value
    }
    if streaming_args and not causal:
        raise ValueError("icefall-zipformer: --chunk-size and --left-context-frames need --causal (a streaming model)")
    encoder, conf = load_icefall_encoder(content, preset=preset, icefall_args=streaming_args, causal=causal)
    return write_espnet_encoder(
        out_dir,
        "zipformer",
        conf,
        encoder.state_dict(),
        INPUT_SIZE,
        f"icefall Zipformer {checkpoint} (use frontend: kaldi_fbank and normalize: null)",
    )
