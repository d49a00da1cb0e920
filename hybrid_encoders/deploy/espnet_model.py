"""Loading a trained ESPnet experiment for export, and deciding what of it can be exported.

Exportable (anything else raises :class:`ExportError` with this list):

* ``encoder``: ``squeezeformer``, ``hybridformer`` (exported in its re-parameterised deploy form), ``zipformer``;
* ``model: espnet`` with a CTC head (``ctc_weight > 0``; CTC or hybrid CTC/attention: the encoder and the CTC head
  are exported, the attention decoder is not), or ``model: espnet_rnnt`` with ``decoder: stateless_transducer``
  (encoder, decoder and joiner; plus the CTC head when the model was trained with one);
* ``frontend``: ``default`` (ESPnet's STFT log-mel) or ``kaldi_fbank``; ``normalize``: ``global_mvn`` or none;
* no ``preencoder`` / ``postencoder``.
"""

import copy
import pathlib
import tempfile
from dataclasses import dataclass
from typing import List, Optional

import torch
import yaml

ENCODERS = ("squeezeformer", "hybridformer", "zipformer")
FRONTENDS = ("default", "kaldi_fbank")
NORMALIZATIONS = ("global_mvn",)
SUPPORTED = (
    f"exportable: encoder {' | '.join(ENCODERS)}; model espnet with a CTC head (CTC, hybrid CTC/attention) or "
    f"espnet_rnnt with decoder stateless_transducer; frontend {' | '.join(FRONTENDS)}; normalize "
    f"{' | '.join(NORMALIZATIONS)} | none; no preencoder or postencoder"
)


class ExportError(Exception):
    """A problem with the export's inputs or options, reported as one message naming the option or file."""


@dataclass
class LoadedExperiment:
    """A trained model ready for export.

    Attributes:
        model: the ESPnet model in eval mode (HybridFormer already folded into deploy form).
        original_encoder: the encoder before folding (for the parity check), or None when nothing was folded.
        config: the training config (``config.yaml``) as a dict.
        kind: ``"ctc"``, ``"ctc_attention"`` or ``"transducer"``.
        token_list: the model's tokens, index = id.
    """

    model: torch.nn.Module
    original_encoder: Optional[torch.nn.Module]
    config: dict
    kind: str
    token_list: List[str]

    @property
    def has_ctc(self) -> bool:
        return getattr(self.model, "ctc", None) is not None and self.model.ctc_weight > 0


def read_config(config_path: pathlib.Path) -> dict:
    """The training config as a dict; ExportError if missing or not a mapping."""
    if not config_path.is_file():
        raise ExportError(f"--config: no such file: {config_path}")
    with open(config_path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    if not isinstance(config, dict) or "encoder" not in config:
        raise ExportError(f"--config: {config_path} is not an ESPnet training config (config.yaml of asr_train)")
    return config


def check_exportable(config: dict, config_path: pathlib.Path) -> str:
    """The model kind (``ctc``, ``ctc_attention``, ``transducer``) of a config, or ExportError naming the key."""
    where = f"--config {config_path}"

    def reject(what: str) -> ExportError:
        return ExportError(f"{where}: {what} cannot be exported ({SUPPORTED})")

    if config.get("encoder") not in ENCODERS:
        raise reject(f"encoder {config.get('encoder')!r}")
    if config.get("frontend") not in FRONTENDS:
        raise reject(f"frontend {config.get('frontend')!r}")
    if config.get("normalize") not in (None, *NORMALIZATIONS):
        raise reject(f"normalize {config.get('normalize')!r}")
    for key in ("preencoder", "postencoder"):
        if config.get(key) is not None:
            raise reject(f"{key} {config.get(key)!r}")
    model_type = config.get("model", "espnet")
    ctc_weight = (config.get("model_conf") or {}).get("ctc_weight", 0.5)
    if model_type == "espnet_rnnt":
        if config.get("decoder") != "stateless_transducer":
            raise reject(f"model espnet_rnnt with decoder {config.get('decoder')!r} (an RNN prediction network)")
        return "transducer"
    if model_type != "espnet":
        raise reject(f"model {model_type!r}")
    if ctc_weight == 0:
        raise reject("an attention-only model (model_conf.ctc_weight: 0, no trained CTC head)")
    return "ctc" if ctc_weight == 1.0 or config.get("decoder") is None else "ctc_attention"


def _resolve_stats_file(config: dict, config_path: pathlib.Path) -> dict:
    """The config with a relative ``normalize_conf.stats_file`` made absolute.

    ESPnet writes the path relative to the recipe directory; the command may run elsewhere, so the path is looked
    for from the working directory, then from each folder above the config file.
    """
    conf = config.get("normalize_conf") or {}
    stats = conf.get("stats_file")
    if config.get("normalize") != "global_mvn" or stats is None:
        return config
    candidates = [pathlib.Path(stats)]
    if not candidates[0].is_absolute():
        candidates += [parent / stats for parent in config_path.resolve().parents]
    for candidate in candidates:
        if candidate.is_file():
            config = copy.deepcopy(config)
            config["normalize_conf"]["stats_file"] = str(candidate.resolve())
            return config
    raise ExportError(
        f"--config {config_path}: normalize_conf.stats_file {stats} not found (looked in the working directory and "
        f"above the config); run from the recipe directory"
    )


def load_experiment(config_path: pathlib.Path, model_path: pathlib.Path) -> LoadedExperiment:
    """Build the model with ESPnet's ``ASRTask.build_model_from_file`` and load the weights, strictly.

    ESPnet itself loads with ``strict=False``, which would leave mismatched weights at their random initial values;
    here every key must match.

    Raises:
        ExportError: unreadable files, an unexportable configuration, or a model file that does not fit the config.
    """
    config_path, model_path = pathlib.Path(config_path), pathlib.Path(model_path)
    config = read_config(config_path)
    kind = check_exportable(config, config_path)
    if not model_path.is_file():
        raise ExportError(f"--model: no such file: {model_path}")
    config = _resolve_stats_file(config, config_path)
    from espnet2.tasks.asr import ASRTask  # slow import (10-25 s): only when an export runs

    with tempfile.TemporaryDirectory() as scratch:
        resolved = pathlib.Path(scratch) / "config.yaml"
        resolved.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
        try:
            model, _ = ASRTask.build_model_from_file(resolved, None, "cpu")
        except (ValueError, KeyError, TypeError, AssertionError, FileNotFoundError) as error:
            raise ExportError(f"--config {config_path}: ESPnet cannot build the model: {error}") from error
    state = torch.load(model_path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict):
        raise ExportError(f"--model {model_path} is not a state dict written by asr_train")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # size mismatches
        raise ExportError(f"--model {model_path} does not fit --config {config_path}: {error}") from error
    if missing or unexpected:
        raise ExportError(
            f"--model {model_path} does not fit --config {config_path}: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}"
        )
    return prepare(model.eval(), config, kind)


def prepare(model: torch.nn.Module, config: dict, kind: str) -> LoadedExperiment:
    """Wrap a loaded eval-mode model; a HybridFormer encoder is folded into its deploy form (a copy of the original
    encoder is kept for the parity check)."""
    original = None
    encoder = model.encoder
    if config["encoder"] == "hybridformer" and encoder.config["nsr_mode"] not in ("off", "deploy"):
        original = copy.deepcopy(encoder)
        encoder.reparameterize()
    return LoadedExperiment(model, original, config, kind, list(config["token_list"]))
