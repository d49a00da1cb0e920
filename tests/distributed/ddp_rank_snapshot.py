"""Test launcher: ``torchrun ... ddp_rank_snapshot.py OUT_DIR <asr_train arguments>``.

Runs ESPnet's unmodified ``espnet2.bin.asr_train`` in this rank's process, exactly as ``torchrun -m
espnet2.bin.asr_train`` would, and afterwards writes what ESPnet itself never writes on ranks other than 0: this
rank's final parameters and step counters, with the ``find_unused_parameters`` setting its DistributedDataParallel
wrapper got, to ``OUT_DIR/rank<RANK>.pt``. The only addition is a DistributedDataParallel subclass that remembers
the instance ESPnet's trainer creates.
"""

import os
import runpy
import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel


class RememberedDDP(DistributedDataParallel):
    """DistributedDataParallel that keeps a reference to every instance, so the trained module outlives ESPnet."""

    instances = []

    def __init__(self, module, *args, **kwargs):
        super().__init__(module, *args, **kwargs)
        RememberedDDP.instances.append(self)


def main() -> None:
    out_dir = Path(sys.argv[1])
    sys.argv = ["asr_train", *sys.argv[2:]]
    torch.nn.parallel.DistributedDataParallel = RememberedDDP
    runpy.run_module("espnet2.bin.asr_train", run_name="__main__", alter_sys=True)
    (wrapper,) = RememberedDDP.instances
    module = wrapper.module
    state = module.state_dict()  # as ESPnet's checkpoint on rank 0 takes it (the step counters settle here)
    counters = {name: int(value) for name, value in state.items() if name.endswith(("batch_count", "num_updates"))}
    snapshot = {
        "parameters": {name: p.detach().clone() for name, p in module.named_parameters()},
        "counters": counters,
        "find_unused_parameters": wrapper.find_unused_parameters,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(snapshot, out_dir / f"rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    main()
