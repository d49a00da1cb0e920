"""RESULTS.md and training curves from ESPnet's per-epoch log lines."""

import json
import os

import pytest

from hybrid_encoders.recipes.report import main, parse_epoch_results, seed_table, write_results

LOG = """[vm] 2026 (trainer:336) INFO: 1/2epoch started
[vm] 2026 (trainer:394) INFO: 1epoch results: [train] iter_time=0.008, loss_ctc=244.522, acc=0.006, loss=126.852, \
time=5.65 seconds, total_count=8, [valid] loss_ctc=116.473, cer_ctc=1.000, loss_att=70.089, acc=0.05, loss=84.0
[vm] 2026 (trainer:394) INFO: 2epoch results: [train] loss=86.981, acc=0.2, time=1 minute and 12.71 seconds, \
[valid] loss=60.5, acc=0.3
[vm] 2026 (trainer:394) INFO: 2epoch results: [train] loss=80.0, acc=0.25, [valid] loss=55.5, acc=0.35
"""


def test_parse_epoch_results(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(LOG)
    epochs = parse_epoch_results(str(log))
    assert sorted(epochs) == [1, 2]
    assert epochs[1]["train"]["loss"] == 126.852 and epochs[1]["train"]["acc"] == 0.006
    assert epochs[1]["valid"] == {"loss_ctc": 116.473, "cer_ctc": 1.0, "loss_att": 70.089, "acc": 0.05, "loss": 84.0}
    # A resumed run logs epoch 2 again: the last line wins.
    assert epochs[2]["valid"] == {"loss": 55.5, "acc": 0.35}


def test_write_results(tmp_path):
    pytest.importorskip("matplotlib")
    exp = tmp_path / "exp" / "asr_x"
    exp.mkdir(parents=True)
    (exp / "train.log").write_text(LOG)
    decode = exp / "decode" / "test"
    for unit, counts in (("wer", [2, 10, 7, 2, 1, 1, 1]), ("cer", [2, 50, 45, 3, 2, 0, 1])):
        os.makedirs(decode / f"score_{unit}")
        keys = ["sentences", "reference_length", "correct", "substitutions", "deletions", "insertions",
                "sentence_errors"]
        (decode / f"score_{unit}" / "counts.json").write_text(json.dumps(dict(zip(keys, counts), error_rate=0)))
    (decode / "score_wer" / "per_speaker.tsv").write_text(
        "speaker\tsentences\treference_length\twer\nf5\t2\t10\t40.00\n")
    text = write_results(str(exp), {"test": str(decode)}, str(exp / "RESULTS.md"), ["config: x.yaml"])
    assert "|test|2|10|70.0|20.0|10.0|10.0|40.0|50.0|" in text
    assert "|test|2|50|90.0|6.0|4.0|0.0|10.0|50.0|" in text
    assert "- test: f5 40.0" in text and "- epochs trained: 2" in text and "- config: x.yaml" in text
    assert (exp / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_log_says_which_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the training stage first"):
        parse_epoch_results(str(tmp_path / "train.log"))


def _fake_run(exp, epochs, rates, decode_tag="decode_x"):
    """An exp dir with a train.log of ``epochs`` epochs and WER counts per test set ({set: (errors, words)})."""
    exp.mkdir(parents=True)
    (exp / "train.log").write_text("".join(f"INFO: {n}epoch results: [train] loss=1.0, [valid] acc=0.5\n"
                                           for n in range(1, epochs + 1)))
    for name, (errors, words) in rates.items():
        directory = exp / decode_tag / name / "score_wer"
        directory.mkdir(parents=True)
        (directory / "counts.json").write_text(json.dumps(dict(
            sentences=10, reference_length=words, correct=words - errors, substitutions=errors, deletions=0,
            insertions=0, sentence_errors=errors, error_rate=0)))


def test_seed_table(tmp_path):
    for seed, (test_errors, other_errors) in enumerate([(10, 30), (12, 20), (14, 40)]):
        _fake_run(tmp_path / f"conformer_s{seed}", 10, {"test": (test_errors, 100), "test_other": (other_errors, 200)})
    _fake_run(tmp_path / "squeeze_s0", 12, {"test": (9, 100), "test_other": (19, 200)})
    _fake_run(tmp_path / "squeeze_s1", 13, {"test": (7, 100), "test_other": (17, 200)})
    rows = {"conformer": [str(tmp_path / f"conformer_s{seed}") for seed in range(3)],
            "squeeze": [str(tmp_path / "squeeze_s0"), str(tmp_path / "squeeze_s1")]}
    lines = seed_table(rows, "decode_x", ["test", "test_other"]).splitlines()
    assert lines[0] == ("| config | seeds | epochs | test WER % mean [min-max] (sd) | "
                        "test_other WER % mean [min-max] (sd) |")
    # test: 10, 12, 14 % -> mean 12, sd 2; test_other: 15, 10, 20 % -> mean 15, sd 5.
    assert lines[2] == "| conformer | 3 | 10 | 12.0 [10.0-14.0] (2.0) | 15.0 [10.0-20.0] (5.0) |"
    assert lines[3] == "| squeeze | 2 | 12-13 | 8.0 [7.0-9.0] (1.4) | 9.0 [8.5-9.5] (0.7) |"
    with pytest.raises(FileNotFoundError, match="decode and score dev of"):
        seed_table(rows, "decode_x", ["dev"])
    with pytest.raises(ValueError, match="row 'empty': no experiment directory"):
        seed_table({"empty": []}, "decode_x", ["test"])


def test_seed_table_command_line(tmp_path, capsys):
    _fake_run(tmp_path / "a_s0", 3, {"test": (1, 10)})
    assert main(["seeds", "--decode_tag", "decode_x", "--test_sets", "test", "--row", f"a={tmp_path}/a_s*"]) == 0
    assert "| a | 1 | 3 | 10.0 [10.0-10.0] (-) |" in capsys.readouterr().out


def test_seed_table_reads_each_run_through_a_decode_tag_glob(tmp_path):
    """Rows whose configs decode different averaged checkpoints share one glob; two matches in a run are an error."""
    _fake_run(tmp_path / "acc_s0", 4, {"test": (2, 10)}, decode_tag="decode_asr_valid.acc.ave_lm")
    _fake_run(tmp_path / "loss_s0", 5, {"test": (3, 10)}, decode_tag="decode_asr_valid.loss.ave_lm")
    rows = {"acc": [str(tmp_path / "acc_s0")], "loss": [str(tmp_path / "loss_s0")]}
    lines = seed_table(rows, "decode_asr_valid.*.ave_lm", ["test"]).splitlines()
    assert lines[2:] == ["| acc | 1 | 4 | 20.0 [20.0-20.0] (-) |", "| loss | 1 | 5 | 30.0 [30.0-30.0] (-) |"]
    (tmp_path / "acc_s0" / "decode_asr_valid.loss.ave_lm").mkdir()
    with pytest.raises(ValueError, match=r"matches 2 directories of .*acc_s0"):
        seed_table(rows, "decode_asr_valid.*.ave_lm", ["test"])
