"""Alternating step-time rounds and the equal-budget epochs of egs/mini/asr1 (hybrid_encoders.recipes.step_time)."""

import numpy as np
import pytest
import soundfile
import torch

from hybrid_encoders.recipes import step_time
from hybrid_encoders.recipes.kaldi_dir import Utterance, write_data_dir

TOKENS = ["<blank>", "<unk>", "<space>", "A", "B", "C", "<sos/eos>"]


def _data_dir(tmp_path, lengths):
    rows = []
    for i, length in enumerate(lengths):
        path = tmp_path / f"u{i}.wav"
        soundfile.write(str(path), np.full(length, 0.1 * (i + 1), dtype=np.float32), 16000, subtype="FLOAT")
        rows.append(Utterance(f"s-u{i:02d}", str(path), "AB C" if i % 2 else "CAB", "s"))
    write_data_dir(str(tmp_path / "data"), rows)
    return str(tmp_path / "data")


def test_make_batches_groups_similar_lengths(tmp_path):
    lengths = [1600, 800, 2400, 3200, 400, 1200]
    batches = step_time.make_batches(_data_dir(tmp_path, lengths), TOKENS, batch_size=2, count=5, seed=0)
    assert len(batches) == 5
    for speech, speech_lengths, text, text_lengths in batches:
        # Sorted by length and cut into pairs: (400, 800), (1200, 1600), (2400, 3200).
        assert sorted(speech_lengths.tolist()) in ([400, 800], [1200, 1600], [2400, 3200])
        assert speech.shape == (2, max(speech_lengths.tolist())) and speech.dtype == torch.float32
        for row in range(2):
            expected = {4: [3, 4, 2, 5], 3: [5, 3, 4]}[int(text_lengths[row])]  # "AB C" / "CAB"
            assert text[row, :text_lengths[row]].tolist() == expected
            assert (text[row, text_lengths[row]:] == -1).all()
    with pytest.raises(ValueError, match="fewer than 8 utterances"):
        step_time.make_batches(_data_dir(tmp_path, lengths), TOKENS, batch_size=8, count=1)


def test_measure_alternates_and_cancels_a_load_change(monkeypatch):
    """A fake clock: B's step costs 2x the reference's, A's 0.8x, C's 0.9x at half the batch (so 1.8x per
    utterance); the load triples after the first round."""
    clock = [0.0]
    order = []
    costs = {"ref.yaml": 1.0, "a.yaml": 0.8, "b.yaml": 2.0, "c.yaml": 0.9}
    warm_up_and_first_round = 4 + 3 * 4

    class FakeTrainee:
        def __init__(self, config, extra_args):
            self.config = config
            self.batch_size = 4 if config == "c.yaml" else 8
            assert extra_args == ["--x"]

        def step(self, batch):
            assert batch[0] == self.batch_size
            order.append(self.config)
            clock[0] += costs[self.config] * (1.0 if len(order) <= warm_up_and_first_round else 3.0)

    monkeypatch.setattr(step_time, "_Trainee", FakeTrainee)
    monkeypatch.setattr(step_time.time, "perf_counter", lambda: clock[0])
    configs = ["ref.yaml", "a.yaml", "b.yaml", "c.yaml"]
    results = step_time.measure(configs, lambda size: [(size, i) for i in range(4)], rounds=3, steps=3,
                                extra_args=["--x"], reference_epochs=10)
    # One warm-up step each, then per round 3 steps of each config in turn.
    assert order[:4] == configs
    assert order[4:] == [config for config in configs for _ in range(3)] * 3
    by_config = {result.config: result for result in results}
    assert by_config["ref.yaml"].ratio == 1.0 and by_config["ref.yaml"].equal_budget_epochs == 10
    assert by_config["a.yaml"].ratio == pytest.approx(0.8) and by_config["a.yaml"].equal_budget_epochs == 12
    assert by_config["b.yaml"].ratio == pytest.approx(2.0) and by_config["b.yaml"].equal_budget_epochs == 5
    assert by_config["b.yaml"].ratio_min == pytest.approx(2.0) and by_config["b.yaml"].ratio_max == pytest.approx(2.0)
    assert by_config["b.yaml"].seconds_per_step == pytest.approx(6.0)  # median of 2, 6, 6
    assert by_config["c.yaml"].batch_size == 4 and by_config["c.yaml"].ratio == pytest.approx(1.8)
    assert by_config["c.yaml"].equal_budget_epochs == 6
    with pytest.raises(ValueError, match=r"need at least --steps \(2\) batches of 8, got 1"):
        step_time.measure(["ref.yaml"], lambda size: [(size, 0)], rounds=1, steps=2, extra_args=["--x"])
