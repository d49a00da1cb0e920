"""Features from audio for an exported model, exactly as its frontend computed them in training.

``frontend.yaml`` (written by the export) names the frontend and its options; this module rebuilds that frontend
module (ESPnet's ``DefaultFrontend`` or our :class:`~hybrid_encoders.frontends.kaldi_fbank.KaldiFbankFrontend`)
in eval mode and runs it with PyTorch. The normalisation is not applied here: it is inside the graphs.
A runtime without PyTorch can compute the same features itself from that description; for ``kaldi_fbank`` models
sherpa-onnx does (see docs/deployment.md).
"""

import pathlib
from typing import Sequence, Tuple

import numpy as np
import torch
import yaml

from hybrid_encoders.deploy.espnet_model import FRONTENDS, ExportError


class FeatureExtractor:
    """The trained frontend, rebuilt from ``frontend.yaml``.

    Args:
        description: the parsed ``frontend.yaml``.
    """

    def __init__(self, description: dict):
        name, conf = description["frontend"], dict(description.get("frontend_conf") or {})
        if name not in FRONTENDS:
            raise ExportError(f"frontend.yaml: frontend {name!r} is not one of {list(FRONTENDS)}")
        if name == "default":
            from espnet2.asr.frontend.default import DefaultFrontend

            self.frontend = DefaultFrontend(**conf)
        else:
            from hybrid_encoders.frontends.kaldi_fbank import KaldiFbankFrontend

            self.frontend = KaldiFbankFrontend(**conf)
        self.frontend.eval()
        self.sample_rate = int(self.frontend.fs) if hasattr(self.frontend, "fs") else 16000

    @classmethod
    def from_folder(cls, folder) -> "FeatureExtractor":
        path = pathlib.Path(folder) / "frontend.yaml"
        if not path.is_file():
            raise ExportError(f"{folder}: no frontend.yaml; not a folder written by hybrid-encoders export onnx")
        return cls(yaml.safe_load(path.read_text(encoding="utf-8")))

    @torch.no_grad()
    def __call__(self, waveforms: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """Padded features of a batch of waveforms.

        Args:
            waveforms: N float32 arrays in [-1, 1), any lengths.

        Returns:
            features (N, T, F) float32, zero beyond each length; lengths (N,) int64.
        """
        lengths = torch.tensor([len(w) for w in waveforms], dtype=torch.int64)
        batch = torch.zeros(len(waveforms), int(lengths.max()))
        for index, waveform in enumerate(waveforms):
            batch[index, : len(waveform)] = torch.from_numpy(np.asarray(waveform, dtype=np.float32))
        features, feature_lengths = self.frontend(batch, lengths)
        mask = torch.arange(features.size(1))[None, :] >= feature_lengths[:, None]
        features = features.masked_fill(mask.unsqueeze(-1), 0.0)
        return features.numpy().astype(np.float32), feature_lengths.numpy().astype(np.int64)

