"""Console progress filter of the training log: batch counts, ETA from a scripted clock, validation lines."""

from hybrid_encoders.recipes.progress import TrainingProgress, format_duration


class ScriptedClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_eta_from_batches_done():
    clock = ScriptedClock()
    progress = TrainingProgress(clock=clock)
    assert progress.feed("[train] mini-batch sizes summary: N-batch=100, mean=16.0, min=8, max=16") is None
    assert progress.feed("x (trainer:336) INFO: 1/4epoch started") == "[train] epoch 1/4 started"
    clock.now = 150.0
    line = progress.feed("x (trainer:811) INFO: 1epoch:train:41-50batch: iter_time=0.1, loss=31.416, acc=0.5, "
                         "loss_att=2.0")
    # 50 of 400 batches in 50 s -> 350 s left.
    assert line == "[train] epoch 1/4  batch 50/100  loss 31.416  acc 0.500  elapsed 50s  ETA 5m50s"
    clock.now = 250.0
    line = progress.feed("x INFO: 2epoch:train:1-50batch: loss=10.0")
    # 150 batches in 150 s -> 250 left.
    assert line.endswith("elapsed 2m30s  ETA 4m10s")


def test_validation_and_warnings_pass_through():
    progress = TrainingProgress(clock=ScriptedClock())
    progress.feed("1/4epoch started")
    line = progress.feed("INFO: 1epoch results: [train] loss=50.0, acc=0.1, [valid] loss_ctc=9.0, loss=8.5, acc=0.75")
    assert line == "[valid] epoch 1/4  loss 8.500  acc 0.750"
    assert progress.feed("x WARNING: something odd") == "x WARNING: something odd"
    assert progress.feed("INFO: Model summary: ...") is None


def test_format_duration():
    assert [format_duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]
