"""Training-step time of several ESPnet ASR configs, measured in alternating rounds, and equal-budget epochs.

The mini recipe compares encoder configurations at the *same training wall-clock* as a reference run (ESPnet's
conformer for its default number of epochs). On a shared, loaded machine that wall-clock cannot be measured directly,
but a ratio of step times can: every config is built with ESPnet's own ``ASRTask.build_model`` and
``build_optimizers`` from its training YAML, then rounds of ``--steps`` training steps (forward, backward, gradient
clipping as ESPnet's trainer does it, optimizer and batch-scheduler step) on the same batches of real training data
alternate between the configs: reference, A, B, ..., reference, A, B, ... A change of machine load shifts the
configs of a round together, so the ratio to the reference *within each round* cancels most of it; the median over
rounds is reported with its range as the uncertainty. Each config steps on batches of its own ``batch_size`` (a
CR-CTC config halves it: every utterance is encoded twice), so the ratio compared is that of the time per training
utterance, i.e. per epoch: ``r = (t_config / b_config) / (t_reference / b_reference)``. A config's equal-budget
number of epochs is ``reference_epochs / r``, rounded to the nearest epoch.

Validation, checkpointing and data loading are not timed: they cost every config about the same few percent.

Command line (run from ``egs/mini/asr1`` after stage 4)::

    python -m hybrid_encoders.recipes.step_time --config conf/train_asr_conformer.yaml \\
        --config conf/train_asr_squeezeformer.yaml --rounds 6 --steps 10 --output exp/step_time.json
"""

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import soundfile
import torch

from hybrid_encoders.recipes.kaldi_dir import read_data_dir

LOG = logging.getLogger(__name__)


@dataclass
class StepTiming:
    """Step time of one config relative to the reference (the first config).

    Attributes:
        config: path of the training YAML.
        seconds_per_step: median over rounds of the mean step time of the round.
        batch_size: utterances per step (the config's ``batch_size``).
        ratio: median over rounds of the per-utterance (per-epoch) time ratio to the reference within the round.
        ratio_min, ratio_max: range of the per-round ratios (the uncertainty of ``ratio``).
        equal_budget_epochs: ``reference_epochs / ratio`` rounded to the nearest epoch (at least 1).
    """

    config: str
    batch_size: int
    seconds_per_step: float
    ratio: float
    ratio_min: float
    ratio_max: float
    equal_budget_epochs: int


def make_batches(data_dir: str, token_list: Sequence[str], batch_size: int, count: int,
                 seed: int = 0) -> List[Tuple[torch.Tensor, ...]]:
    """Batches of real training utterances, shaped as ESPnet's folded sampler makes them.

    The utterances are sorted by length and cut into consecutive groups of ``batch_size`` (so a batch holds
    utterances of similar length, as ESPnet's ``folded`` batches do); ``count`` groups are drawn at random.

    Args:
        data_dir: Kaldi directory (``wav.scp``, ``text``).
        token_list: ESPnet token list of ``token_type char`` (a space is ``<space>``).
        batch_size: utterances per batch.
        count: number of batches.
        seed: seed of the draw.

    Returns:
        ``count`` tuples ``(speech (B, N) float32, speech_lengths (B,), text (B, L) int64 padded with -1,
        text_lengths (B,))``.
    """
    index = {token: i for i, token in enumerate(token_list)}
    unknown = index["<unk>"]
    rows = read_data_dir(data_dir)
    audio = {row.utt_id: soundfile.read(row.wav_path, dtype="float32")[0] for row in rows}
    rows.sort(key=lambda row: audio[row.utt_id].shape[0])
    groups = [rows[i:i + batch_size] for i in range(0, len(rows) - batch_size + 1, batch_size)]
    if not groups:
        raise ValueError(f"{data_dir}: fewer than {batch_size} utterances")
    rng = np.random.default_rng(seed)
    batches = []
    for group_index in rng.integers(len(groups), size=count):
        group = groups[group_index]
        waves = [torch.from_numpy(audio[row.utt_id]) for row in group]
        tokens = [torch.tensor([index.get("<space>" if c == " " else c, unknown) for c in row.text]) for row in group]
        batches.append((torch.nn.utils.rnn.pad_sequence(waves, batch_first=True),
                        torch.tensor([w.shape[0] for w in waves]),
                        torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True, padding_value=-1),
                        torch.tensor([t.shape[0] for t in tokens])))
    return batches


class _Trainee:
    """One config's model, optimizer and batch-stepped scheduler, built by ESPnet's ASR task from the YAML."""

    def __init__(self, config: str, extra_args: Sequence[str]) -> None:
        from espnet2.schedulers.abs_scheduler import AbsBatchStepScheduler
        from espnet2.tasks.abs_task import scheduler_classes
        from espnet2.tasks.asr import ASRTask

        args = ASRTask.get_parser().parse_args(["--config", config, *extra_args])
        torch.manual_seed(args.seed)
        self.model = ASRTask.build_model(args)
        self.model.train()
        self.optimizer = ASRTask.build_optimizers(args, self.model)[0]
        self.scheduler = None
        if args.scheduler is not None:
            scheduler = scheduler_classes[args.scheduler](self.optimizer, **args.scheduler_conf)
            self.scheduler = scheduler if isinstance(scheduler, AbsBatchStepScheduler) else None
        self.grad_clip = args.grad_clip
        self.batch_size = args.batch_size

    def step(self, batch: Tuple[torch.Tensor, ...]) -> None:
        speech, speech_lengths, text, text_lengths = batch
        loss, _, _ = self.model(speech=speech, speech_lengths=speech_lengths, text=text, text_lengths=text_lengths)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()


def measure(configs: Sequence[str], batches_for: Callable[[int], Sequence[Tuple[torch.Tensor, ...]]], rounds: int,
            steps: int, extra_args: Sequence[str] = (), reference_epochs: int = 10) -> List[StepTiming]:
    """Time ``rounds`` alternating rounds of ``steps`` training steps per config.

    Args:
        configs: training YAMLs; the first is the reference.
        batches_for: ``batches_for(batch_size)``: batches of that size (:func:`make_batches`), at least ``steps``;
            round ``r`` uses batches ``r * steps ...`` (cyclically), the same for every config of a batch size.
        rounds: number of rounds (each config runs once per round, in the order given).
        steps: timed steps per config and round (after one untimed warm-up step per config).
        extra_args: ``asr_train`` options every config gets (token list, normalisation, frontend sampling rate).
        reference_epochs: epochs of the reference run whose wall-clock is the budget.

    Returns:
        One :class:`StepTiming` per config, in the order of ``configs``.
    """
    if rounds < 1 or steps < 1:
        raise ValueError(f"need rounds >= 1 and steps >= 1; got rounds={rounds}, steps={steps}")
    trainees = [_Trainee(config, extra_args) for config in configs]
    batches = {trainee.batch_size: batches_for(trainee.batch_size) for trainee in trainees}
    for size, some in batches.items():
        if len(some) < steps:
            raise ValueError(f"need at least --steps ({steps}) batches of {size}, got {len(some)}")
    for trainee in trainees:
        trainee.step(batches[trainee.batch_size][0])
    times: Dict[str, List[float]] = {config: [] for config in configs}
    for round_index in range(rounds):
        for config, trainee in zip(configs, trainees):
            own = batches[trainee.batch_size]
            chosen = [own[(round_index * steps + i) % len(own)] for i in range(steps)]
            start = time.perf_counter()
            for batch in chosen:
                trainee.step(batch)
            times[config].append((time.perf_counter() - start) / steps)
        LOG.info("round %d/%d: %s", round_index + 1, rounds,
                 ", ".join(f"{config} {times[config][-1]:.3f} s/step" for config in configs))
    reference, reference_size = times[configs[0]], trainees[0].batch_size
    results = []
    for config, trainee in zip(configs, trainees):
        ratios = [(t / trainee.batch_size) / (r / reference_size) for t, r in zip(times[config], reference)]
        ratio = statistics.median(ratios)
        results.append(StepTiming(config, trainee.batch_size, statistics.median(times[config]), ratio, min(ratios),
                                  max(ratios), max(1, int(round(reference_epochs / ratio)))))
    return results


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True, help="training YAML; the first is the "
                        "reference; repeatable")
    parser.add_argument("--data_dir", default="data/train")
    parser.add_argument("--token_list", default="data/token_list/char/tokens.txt")
    parser.add_argument("--stats_file", default="exp/asr_stats_char/train/feats_stats.npz",
                        help="feats_stats.npz of stage 4; '' for no normalisation")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--reference_epochs", type=int, default=10)
    parser.add_argument("--output", help="JSON file of the results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s", datefmt="%H:%M:%S")
    with open(args.token_list, encoding="utf-8") as stream:
        token_list = [line.rstrip("\n") for line in stream]
    # Global mean-variance normalisation costs the same in every config; without stage 4's statistics it is left out.
    extra_args = ["--token_list", args.token_list, "--token_type", "char", "--frontend_conf", "fs=16k"]
    if args.stats_file:
        extra_args += ["--normalize", "global_mvn", "--normalize_conf", f"stats_file={args.stats_file}"]
    try:
        count = args.rounds * args.steps
        results = measure(args.config, lambda size: make_batches(args.data_dir, token_list, size, count), args.rounds,
                          args.steps, extra_args, args.reference_epochs)
    except (FileNotFoundError, ValueError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    print("| config | batch | s/step | epoch-time ratio to the first (range over rounds) | equal-budget epochs |")
    print("|---|---:|---:|---|---:|")
    for result in results:
        print(f"| {result.config} | {result.batch_size} | {result.seconds_per_step:.3f} | {result.ratio:.3f} "
              f"({result.ratio_min:.3f}-{result.ratio_max:.3f}) | {result.equal_budget_epochs} |")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as stream:
            json.dump([asdict(result) for result in results], stream, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
