"""Checkpoint importers: other toolkits' encoder weights -> ESPnet-loadable files of our encoders.

Each importer module (``nemo_squeezeformer``, ``icefall_zipformer``) offers ``convert(checkpoint, out_dir)`` and
writes its result with :func:`write_espnet_encoder`:

* ``out_dir/encoder.pth``: the encoder's state dict with keys prefixed ``encoder.``, for
  ``--init_param out_dir/encoder.pth`` (ESPnet then loads the matching keys of the whole ASR model);
* ``out_dir/encoder_conf.yaml``: the ``encoder:`` / ``encoder_conf:`` lines to paste into the training config.
"""

from pathlib import Path
from typing import Any, Dict, Mapping

import torch
import yaml


def write_espnet_encoder(
    out_dir: str,
    encoder: str,
    encoder_conf: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    input_size: int,
    source: str,
) -> Dict[str, Path]:
    """Write ``encoder.pth`` and ``encoder_conf.yaml`` into ``out_dir`` (created if needed).

    Args:
        out_dir: output directory.
        encoder: the ESPnet encoder choice, e.g. ``"squeezeformer"``.
        encoder_conf: its complete keyword configuration.
        state_dict: the encoder's own state dict (keys without the ``encoder.`` prefix).
        input_size: feature dimension the encoder expects (written as a comment: ESPnet derives it from the frontend).
        source: where the weights came from (written as a comment).

    Returns:
        ``{"weights": path, "config": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "encoder.pth"
    torch.save({f"encoder.{key}": value for key, value in state_dict.items()}, weights)
    config = out / "encoder_conf.yaml"
    header = (
        f"# Converted from {source}\n"
        f"# The frontend must produce {input_size}-dim features; load the weights with --init_param {weights}\n"
    )
    body = yaml.safe_dump({"encoder": encoder, "encoder_conf": dict(encoder_conf)}, sort_keys=False)
    config.write_text(header + body)
    return {"weights": weights, "config": config}
