"""The checkpoint a recipe decodes: the average ESPnet's trainer writes for a training config.

ESPnet's trainer averages the ``keep_nbest_models`` best checkpoints of each ``best_model_criterion`` entry
``[phase, metric, max|min]`` into ``<phase>.<metric>.ave.pth`` (``espnet2/main_funcs/average_nbest_models.py``).
``asr.sh`` decodes ``valid.acc.ave.pth`` unless told otherwise, a file that a config selecting models on another
metric never gets: CTC-only and transducer models report no attention accuracy, so their configs select on the
validation loss. The recipes therefore decode the average of the config's first criterion. A config without the key
keeps asr.sh's default: ESPnet's default criteria include ``[valid, acc, max]``.

Command line (prints the file name, e.g. ``valid.loss.ave.pth``)::

    python -m hybrid_encoders.recipes.averaged_model conf/train_asr_squeezeformer_ctc.yaml
"""

import sys
from typing import Sequence

import yaml

ASR_SH_DEFAULT = ["valid", "acc", "max"]  # asr.sh's --inference_asr_model valid.acc.ave.pth


def averaged_model_name(config_path: str) -> str:
    """``<phase>.<metric>.ave.pth`` of the first ``best_model_criterion`` entry of the training YAML ``config_path``.

    Raises:
        FileNotFoundError: no such config.
        ValueError: the config is not a YAML mapping, or its first criterion is not ``[phase, metric, max|min]``.
    """
    with open(config_path) as stream:
        config = yaml.safe_load(stream)
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: a training config must be a YAML mapping")
    criteria = config.get("best_model_criterion") or [ASR_SH_DEFAULT]
    first = criteria[0] if isinstance(criteria, list) and criteria else None
    if not (isinstance(first, list) and len(first) == 3 and first[2] in ("max", "min")
            and all(isinstance(part, str) and part for part in first[:2])):
        raise ValueError(f"{config_path}: best_model_criterion must list [phase, metric, max|min] entries, "
                         f"got {criteria!r}")
    return f"{first[0]}.{first[1]}.ave.pth"


def main(argv: Sequence[str] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 1:
        print("usage: python -m hybrid_encoders.recipes.averaged_model CONFIG.yaml", file=sys.stderr)
        return 2
    try:
        print(averaged_model_name(argv[0]))
    except (OSError, ValueError, yaml.YAMLError) as error:
        print(f"ERROR: cannot tell which checkpoint to decode: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
