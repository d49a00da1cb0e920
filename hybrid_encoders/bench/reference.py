"""The reference implementations, built from checkouts a user points the benchmark to (nothing of them is vendored).

* ``--reference-icefall PATH``: icefall's Zipformer2 + Conv2dSubsampling from ``PATH/egs/librispeech/ASR/zipformer``
  (the recipe's own modules, as ``train.py`` builds them), at the size of our ``zipformer`` preset;
* ``--reference-nemo PATH``: NeMo's ``SqueezeformerEncoder`` from a NeMo checkout (or an installed ``nemo``), at the
  size of our ``squeezeformer`` preset (NeMo's ``squeezeformer_ctc_bpe.yaml`` structure).

Both are wrapped in ESPnet's encoder interface, ``forward(xs (B, T, F), ilens (B,)) -> (ys (B, T', D), olens, None)``,
computing what icefall's ``forward_encoder`` / NeMo's ``forward`` compute, so the harness times and measures them
exactly as it does ours.

icefall's ``scaling.py`` imports k2 for its Swoosh kernels and ``icefall.utils`` (which imports k2, kaldialign, lhotse,
...) for one autocast helper. Where they cannot be imported, stand-ins are installed (and reported in the results):
a ``k2`` with only the six Swoosh functions the recipe calls, keeping for the backward pass what k2 keeps (the
derivative quantised to 8 bits with random dithering, 1 byte an element), so icefall's memory is not overstated;
and an ``icefall.utils`` with only ``torch_autocast``. NeMo has no such shortcut: its encoder needs ``nemo.core``
(``pip install nemo_toolkit[asr]`` or the checkout's ``requirements/``); without it the error says what is missing.
"""

import contextlib
import importlib
import pathlib
import sys
import types
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from hybrid_encoders.layers.swoosh import SWOOSH_ACTIVATIONS

ICEFALL_RECIPE = pathlib.Path("egs/librispeech/ASR/zipformer")
NEMO_ENCODER = "nemo.collections.asr.modules.squeezeformer_encoder"

_KINDS = ("l", "r")
_SLOPE = 0.08  # swoosh'(x) + 0.08 lies in [0, 1]
_QUANTISATION_RANGE = 1.005  # 8 bits over [0, 1.005]


def _swoosh_value_and_derivative(x: torch.Tensor, kind: str) -> Tuple[torch.Tensor, torch.Tensor]:
    return SWOOSH_ACTIVATIONS[f"swoosh_{kind}"].value_and_derivative(x.float())


class _QuantisedSwoosh(torch.autograd.Function):
    """k2's training Swoosh: keeps ``swoosh'(x) + 0.08`` as uint8 with dithering; optional dropout inside."""

    @staticmethod
    def forward(ctx, x, kind, dropout_prob):
        value, derivative = _swoosh_value_and_derivative(x, kind)
        shifted_derivative = derivative + _SLOPE
        if dropout_prob:
            dropped = torch.rand_like(value) < dropout_prob
            value = value.masked_fill(dropped, 0.0) / (1.0 - dropout_prob)
            shifted_derivative = shifted_derivative.masked_fill(dropped, _SLOPE)
        dither = torch.rand_like(value)
        ctx.dropout_prob = dropout_prob
        ctx.save_for_backward((shifted_derivative * (255.0 / _QUANTISATION_RANGE) + dither).to(torch.uint8))
        return value

    @staticmethod
    def backward(ctx, grad):
        (quantised,) = ctx.saved_tensors
        derivative = (quantised.float() * (_QUANTISATION_RANGE / 255.0) - _SLOPE) / (1.0 - ctx.dropout_prob)
        return grad * derivative, None, None


def k2_swoosh_stand_in() -> types.ModuleType:
    """A module named ``k2`` with the Swoosh functions icefall's Zipformer recipe calls (and nothing else)."""
    module = types.ModuleType("k2")
    module.__doc__ = "Stand-in for k2's Swoosh functions (hybrid_encoders.bench.reference); not k2."
    for kind in _KINDS:

        def forward(x, kind=kind):
            return _swoosh_value_and_derivative(x, kind)[0]

        def forward_and_deriv(x, kind=kind):
            return _swoosh_value_and_derivative(x, kind)

        def with_grad(x, dropout_prob=0.0, kind=kind):
            if not x.requires_grad:
                return forward(x)
            return _QuantisedSwoosh.apply(x, kind, float(dropout_prob))

        setattr(module, f"swoosh_{kind}", with_grad)
        setattr(module, f"swoosh_{kind}_forward", forward)
        setattr(module, f"swoosh_{kind}_forward_and_deriv", forward_and_deriv)
    return module


def _icefall_utils_stand_in() -> types.ModuleType:
    package = types.ModuleType("icefall")
    package.__path__ = []
    utils = types.ModuleType("icefall.utils")

    @contextlib.contextmanager
    def torch_autocast(device_type="cuda", **kwargs):
        with torch.amp.autocast(device_type=device_type, **kwargs):
            yield

    utils.torch_autocast = torch_autocast
    package.utils = utils
    return package


def _import_or_stand_in(name: str, stand_in: Callable[[], types.ModuleType], notes: List[str], why: str):
    try:
        importlib.import_module(name)
    except ImportError as error:
        module = stand_in()
        sys.modules[name] = module
        for attribute in dir(module):
            value = getattr(module, attribute)
            if isinstance(value, types.ModuleType):
                sys.modules[value.__name__] = value
        notes.append(f"{name} not importable ({error}): {why}")


def _set_batch_count(model: nn.Module, batch_count: float) -> None:
    """icefall's ``set_batch_count``: every module with a ``batch_count`` attribute gets the count."""
    for module in model.modules():
        if hasattr(module, "batch_count") and not isinstance(getattr(module, "batch_count"), torch.Tensor):
            module.batch_count = batch_count


class IcefallZipformer(nn.Module):
    """icefall's ``encoder_embed`` + ``encoder`` in ESPnet's encoder interface (icefall ``forward_encoder``)."""

    def __init__(self, embed: nn.Module, encoder: nn.Module, make_pad_mask: Callable):
        super().__init__()
        self.encoder_embed, self.encoder, self._make_pad_mask = embed, encoder, make_pad_mask

    def forward(self, xs: torch.Tensor, ilens: torch.Tensor, prev_states=None):
        x, lengths = self.encoder_embed(xs, ilens)
        out, olens = self.encoder(x.permute(1, 0, 2), lengths, self._make_pad_mask(lengths))
        return out.permute(1, 0, 2), olens, None

    def set_batch_count(self, batch_count: float) -> None:
        _set_batch_count(self, batch_count)


def _recipe_dir(path: str, relative: pathlib.Path, option: str, expected: List[str]) -> pathlib.Path:
    directory = pathlib.Path(path).expanduser().resolve() / relative
    missing = [name for name in expected if not (directory / name).is_file()]
    if missing:
        raise ValueError(
            f"{option} {path}: not a checkout with {relative}/{{{','.join(expected)}}} (missing {', '.join(missing)})"
        )
    return directory


def build_icefall_zipformer(path: str, preset: str, notes: List[str]) -> nn.Module:
    """icefall's Zipformer2 of our ``preset`` from the checkout at ``path`` (``--reference-icefall``).

    Args:
        path: an icefall checkout (the folder holding ``egs/`` and ``icefall/``).
        preset: a preset of our ``zipformer`` (icefall's train.py arguments of Zipformer-S/M/L).
        notes: stand-ins installed for missing dependencies are appended here.

    Raises:
        ValueError: ``path`` is not an icefall checkout.
    """
    from hybrid_encoders.encoders.zipformer import ZipformerEncoder

    recipe = _recipe_dir(path, ICEFALL_RECIPE, "--reference-icefall", ["zipformer.py", "subsampling.py", "scaling.py"])
    for directory in (str(recipe), str(recipe.parents[3])):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    _import_or_stand_in("k2", k2_swoosh_stand_in, notes, "icefall's Swoosh calls run on a stand-in with k2's semantics")
    _import_or_stand_in("icefall.utils", _icefall_utils_stand_in, notes, "icefall.utils.torch_autocast stand-in")
    zipformer = importlib.import_module("zipformer")
    subsampling = importlib.import_module("subsampling")
    scaling = importlib.import_module("scaling")
    config = ZipformerEncoder.build_config(preset)

    def dropout():
        return scaling.ScheduledFloat(*[tuple(point) for point in config["dropout_schedule"]])

    embed = subsampling.Conv2dSubsampling(80, config["encoder_dim"][0], dropout=dropout())
    encoder = zipformer.Zipformer2(
        output_downsampling_factor=2,
        downsampling_factor=tuple(config["downsampling_factor"]),
        num_encoder_layers=tuple(config["num_encoder_layers"]),
        encoder_dim=tuple(config["encoder_dim"]),
        encoder_unmasked_dim=tuple(config["encoder_unmasked_dim"]),
        query_head_dim=tuple(config["query_head_dim"]),
        pos_head_dim=tuple(config["pos_head_dim"]),
        value_head_dim=tuple(config["value_head_dim"]),
        pos_dim=config["pos_dim"],
        num_heads=tuple(config["num_heads"]),
        feedforward_dim=tuple(config["feedforward_dim"]),
        cnn_module_kernel=tuple(config["cnn_module_kernel"]),
        dropout=dropout(),
        warmup_batches=config["warmup_batches"],
        causal=False,
    )

    def make_pad_mask(lengths: torch.Tensor) -> torch.Tensor:
        return torch.arange(int(lengths.max()), device=lengths.device)[None, :] >= lengths[:, None]

    return IcefallZipformer(embed, encoder, make_pad_mask)


class NemoSqueezeformer(nn.Module):
    """NeMo's SqueezeformerEncoder in ESPnet's encoder interface (NeMo works on (B, D, T))."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, xs: torch.Tensor, ilens: torch.Tensor, prev_states=None):
        out, olens = self.encoder(audio_signal=xs.transpose(1, 2), length=ilens)
        return out.transpose(1, 2), olens, None


def nemo_squeezeformer_config(preset: str) -> Dict[str, object]:
    """NeMo ``SqueezeformerEncoder`` arguments of our ``squeezeformer`` preset (same structure and dropouts)."""
    from hybrid_encoders.encoders.squeezeformer import SqueezeformerEncoder

    config = SqueezeformerEncoder.build_config(preset)
    return {
        "feat_in": 80,
        "n_layers": config["num_blocks"],
        "d_model": config["output_size"],
        "n_heads": config["attention_heads"],
        "ff_expansion_factor": config["linear_units"] // config["output_size"],
        "conv_kernel_size": config["cnn_module_kernel"],
        "subsampling": "dw_striding",
        "subsampling_factor": 4,
        "subsampling_conv_channels": config["subsampling_channels"],
        "dropout": config["dropout_rate"],
        "dropout_emb": 0.0,
        "dropout_att": config["attention_dropout_rate"],
        "time_reduce_idx": config["time_reduce_idx"],
        "time_recovery_idx": config["time_recover_idx"],
    }


def build_nemo_squeezeformer(path: Optional[str], preset: str) -> nn.Module:
    """NeMo's Squeezeformer of our ``preset`` from the NeMo checkout at ``path`` (``--reference-nemo``).

    Raises:
        ValueError: ``path`` is not a NeMo checkout, or NeMo's encoder cannot be imported (the message names the
            missing module and how to install NeMo's ASR dependencies).
    """
    if path:
        modules = pathlib.Path("nemo/collections/asr/modules")
        root = str(_recipe_dir(path, modules, "--reference-nemo", ["squeezeformer_encoder.py"]).parents[3])
        if root not in sys.path:
            sys.path.insert(0, root)
    try:
        module = importlib.import_module(NEMO_ENCODER)
    except ImportError as error:
        raise ValueError(
            f"--reference-nemo: cannot import NeMo's {NEMO_ENCODER} ({error}); NeMo's encoder needs its toolkit's "
            "dependencies: `pip install nemo_toolkit[asr]` (or `pip install -r requirements/requirements.txt "
            "-r requirements/requirements_asr.txt` in the checkout) into this environment"
        ) from error
    return NemoSqueezeformer(module.SqueezeformerEncoder(**nemo_squeezeformer_config(preset)))
