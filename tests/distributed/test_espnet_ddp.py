"""ESPnet's own trainer under DistributedDataParallel: ``torchrun --nproc_per_node 2`` on CPU (gloo) with ESPnet's
default ``unused_parameters: false``, for every encoder and the Zipformer pruned transducer with ScaledAdam + Eden.

Both ranks must finish and hold identical parameters. ESPnet saves only rank 0's model, so each rank runs through
``ddp_rank_snapshot.py``, which runs ``espnet2.bin.asr_train`` unchanged and then saves that rank's parameters.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_TOKENS, asr_train_arguments, tiny_training_config, write_random_corpus

SNAPSHOT = Path(__file__).with_name("ddp_rank_snapshot.py")
STEPS = 3  # 12 utterances in global batches of 4: 2 per rank


def torchrun_asr_train(tmp_path: Path, system: str) -> str:
    """Train ``system`` for one epoch with 2 CPU processes; returns the combined log."""
    train = write_random_corpus(tmp_path / "train", 4 * STEPS, seed=0)
    valid = write_random_corpus(tmp_path / "valid", 2, seed=1)
    (tmp_path / "tokens.txt").write_text("\n".join(TINY_TOKENS) + "\n")
    config = tiny_training_config(system)
    assert "unused_parameters" not in config  # ESPnet's default: false
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(SNAPSHOT), "snapshots",
        *asr_train_arguments(train, valid),
        "--train_shape_file", f"{train}/wav.scp", "--valid_shape_file", f"{valid}/wav.scp",
        "--batch_size", "4", "--max_epoch", "1", "--output_dir", "exp",
        "--dist_backend", "gloo", "--multiprocessing_distributed", "false",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"torchrun asr_train failed:\n{log[-6000:]}"
    return log


@pytest.mark.slow
@pytest.mark.parametrize("system", ["squeezeformer", "hybridformer", "zipformer", "zipformer_transducer"])
def test_two_ranks_finish_with_identical_parameters(tmp_path, system):
    torchrun_asr_train(tmp_path, system)
    ranks = [torch.load(tmp_path / "snapshots" / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert [rank["find_unused_parameters"] for rank in ranks] == [False, False]  # DDP ran, with ESPnet's default
    assert ranks[0]["parameters"].keys() == ranks[1]["parameters"].keys()
    different = [name for name, value in ranks[0]["parameters"].items() if not torch.equal(value, ranks[1]["parameters"][name])]
    assert different == []
    expected_counters = {"zipformer": {"encoder.batch_count": STEPS},
                         "zipformer_transducer": {"encoder.batch_count": STEPS, "num_updates": STEPS}}
    assert ranks[0]["counters"] == ranks[1]["counters"] == expected_counters.get(system, {})
    # rank 0's snapshot is the model ESPnet saved, after STEPS optimizer steps
    checkpoint = torch.load(tmp_path / "exp" / "checkpoint.pth", map_location="cpu", weights_only=False)  # ours
    assert checkpoint["schedulers"][0]["batch"] == STEPS
    for name, value in ranks[0]["parameters"].items():
        assert torch.equal(value, checkpoint["model"][name]), name
