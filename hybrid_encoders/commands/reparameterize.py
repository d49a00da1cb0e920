"""``hybrid-encoders reparameterize``: turn a trained HybridFormer ESPnet experiment into a deploy-mode one.

    hybrid-encoders reparameterize --config exp/asr_x/config.yaml --model exp/asr_x/valid.acc.ave.pth \
        --out exp/asr_x_deploy

Reads the ``config.yaml`` and model file written by ``espnet2.bin.asr_train``, folds every NSR convolution of the
encoder into one depthwise conv with bias (:meth:`HybridformerEncoder.reparameterize`), and writes ``DIR/config.yaml``
(``encoder_conf`` with ``nsr_mode: deploy``) and ``DIR/<model file name>``, which ESPnet's unmodified
``python -m espnet2.bin.asr_inference --asr_train_config DIR/config.yaml --asr_model_file DIR/<name>`` loads.

ESPnet loads checkpoints with ``strict=False``, which would silently leave mismatched weights at their initial values;
so before writing anything the command checks that the input checkpoint fits its config exactly, that the converted
checkpoint fits the converted config exactly, and that the encoder output did not change (``--atol``). Relative paths
inside the config (e.g. the normalisation statistics) are kept as they are: run the command, like ESPnet, from the
recipe directory.
"""

import argparse
import copy
import pathlib
import sys

import torch
import yaml

NAME = "reparameterize"
HELP = "fold a trained HybridFormer's NSR convolutions into deploy mode (config.yaml + checkpoint for asr_inference)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=pathlib.Path, help="config.yaml written by asr_train")
    parser.add_argument(
        "--model", required=True, type=pathlib.Path, help="model file (state dict) written by asr_train"
    )
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory (created if needed)")
    parser.add_argument(
        "--atol", type=float, default=1e-4,
        help="largest allowed change of the encoder output on a random input (default: 1e-4)",
    )


class ConversionError(Exception):
    """A problem with the inputs, reported as one line naming the option or file."""


def run(args: argparse.Namespace) -> int:
    try:
        report = convert(args.config, args.model, args.out, args.atol)
    except ConversionError as error:
        print(f"hybrid-encoders reparameterize: error: {error}", file=sys.stderr)
        return 2
    print(report)
    return 0


def convert(config_path: pathlib.Path, model_path: pathlib.Path, out_dir: pathlib.Path, atol: float = 1e-4) -> str:
    """Do the conversion (see the module docstring); returns a short report.

    Raises:
        ConversionError: unreadable or mismatched inputs, a non-HybridFormer experiment, nothing to fold, an output
            that would overwrite the inputs, or a converted model that does not reproduce the original.
    """
    config = _read_config(config_path)
    if not model_path.is_file():
        raise ConversionError(f"--model: no such file: {model_path}")
    out_config, out_model = out_dir / "config.yaml", out_dir / model_path.name
    for source, target in ((config_path, out_config), (model_path, out_model)):
        if target.exists() and target.resolve() == source.resolve():
            raise ConversionError(f"--out: {out_dir} would overwrite the input {source}; choose another directory")

    model = _build(config, "--config")
    state = torch.load(model_path, map_location="cpu", weights_only=False)
    _load_exactly(model, state, f"--model {model_path} does not fit --config {config_path}")
    model.eval()
    mode = model.encoder.config["nsr_mode"]
    if mode in ("off", "deploy"):
        raise ConversionError(f"--config: encoder_conf has nsr_mode {mode!r}; there is nothing to re-parameterise")
    original = copy.deepcopy(model.encoder)

    deployed_config = copy.deepcopy(config)
    deployed_config["encoder_conf"] = model.encoder.reparameterize()
    deployed_state = model.state_dict()
    rebuilt = _build(deployed_config, "the converted config")
    _load_exactly(rebuilt, deployed_state, "the converted checkpoint does not fit the converted config")
    difference = _encoder_difference(original, rebuilt.eval().encoder, getattr(model, "ctc", None))
    if not difference <= atol:
        raise ConversionError(f"the folded encoder changed the output by {difference:.3g} > --atol {atol:g}")

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_config, "w", encoding="utf-8") as handle:
        yaml.safe_dump(deployed_config, handle, sort_keys=False, allow_unicode=True)
    torch.save(deployed_state, out_model)
    return (
        f"folded {len(rebuilt.encoder.encoders)} NSR convolutions ({mode} mode -> deploy); "
        f"max encoder output change {difference:.2g}\nwrote {out_config}\nwrote {out_model}"
    )


def _read_config(path: pathlib.Path) -> dict:
    if not path.is_file():
        raise ConversionError(f"--config: no such file: {path}")
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    if not isinstance(config, dict):
        raise ConversionError(f"--config: {path} is not an ESPnet config (a YAML mapping)")
    if config.get("encoder") != "hybridformer":
        raise ConversionError(
            f"--config: the encoder is {config.get('encoder')!r}; reparameterize converts 'hybridformer' experiments"
        )
    return config


def _build(config: dict, what: str) -> torch.nn.Module:
    from espnet2.tasks.asr import ASRTask  # slow import (10-25 s): only when a conversion runs

    try:
        return ASRTask.build_model(argparse.Namespace(**config))
    except (ValueError, KeyError, TypeError) as error:
        raise ConversionError(f"{what}: ESPnet cannot build the model: {error}") from error


def _load_exactly(model: torch.nn.Module, state: dict, message: str) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConversionError(f"{message}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")


@torch.no_grad()
def _encoder_difference(before: torch.nn.Module, after: torch.nn.Module, ctc) -> float:
    """Max |before - after| of the encoder outputs on a fixed random 4 s input (``ctc`` for self-conditioning)."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, 400, before.input_size, generator=generator)
    lengths = torch.tensor([400])
    expected, after_out = before(features, lengths, ctc=ctc)[0], after(features, lengths, ctc=ctc)[0]
    if isinstance(expected, tuple):  # intermediate CTC outputs
        expected, after_out = expected[0], after_out[0]
    return float((expected - after_out).abs().max())
