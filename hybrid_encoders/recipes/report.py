"""Experiment report of a recipe run: per-epoch curves from ESPnet's training log and ``RESULTS.md``.

ESPnet's trainer logs one line per epoch, ``<N>epoch results: [train] loss=..., acc=..., [valid] loss=..., acc=...``
(``espnet2/train/reporter.py``). :func:`parse_epoch_results` reads those lines, :func:`plot_curves` draws loss and
accuracy per epoch for both sets, and :func:`write_results` writes the error-rate tables in the column layout of
ESPnet's ``show_asr_result.sh`` (``Snt Wrd Corr Sub Del Ins Err S.Err``) plus the per-speaker WER. :func:`seed_table` summarises runs of several
configurations over seeds (mean and range of the WER per test set).

Command lines::

    python -m hybrid_encoders.recipes.report --exp_dir exp/asr_conformer_char --decode_dir test=DIR --output RESULTS.md
    python -m hybrid_encoders.recipes.report seeds --decode_tag decode_asr_valid.acc.ave_lm_char_valid.loss.ave \
        --test_sets test test_other --row "conformer=exp/asr_conformer_s*_char" --row "squeezeformer=exp/asr_sq*_char"
"""

import argparse
import glob
import os
import re
import statistics
import sys
from typing import Dict, List, Mapping, Sequence

from hybrid_encoders.recipes.scoring import UNITS, load_counts

_EPOCH_LINE = re.compile(r"(\d+)epoch results: (.*)$")
_SECTION = re.compile(r"\[(\w+)\] ([^\[]*)")
_VALUE = re.compile(r"(\w+)=([-+0-9.eE]+|nan|inf)(?:,|$)")


def parse_epoch_results(log_file: str) -> Dict[int, Dict[str, Dict[str, float]]]:
    """``{epoch: {"train": {"loss": ..., "acc": ...}, "valid": {...}}}`` from an ESPnet training log.

    A resumed run logs an epoch again; the last line for an epoch wins.
    """
    if not os.path.isfile(log_file):
        raise FileNotFoundError(f"{log_file} not found: run the training stage first")
    epochs: Dict[int, Dict[str, Dict[str, float]]] = {}
    with open(log_file, encoding="utf-8", errors="replace") as stream:
        for line in stream:
            match = _EPOCH_LINE.search(line)
            if not match:
                continue
            sections = {}
            for name, body in _SECTION.findall(match.group(2)):
                sections[name] = {key: float(value) for key, value in _VALUE.findall(body.strip().rstrip(","))}
            epochs[int(match.group(1))] = sections
    return epochs


def plot_curves(epochs: Dict[int, Dict[str, Dict[str, float]]], output_png: str, title: str = "") -> None:
    """Plot loss and accuracy per epoch for the train and valid sets into ``output_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not epochs:
        raise ValueError("no 'Nepoch results' lines in the training log: did the first epoch finish?")
    numbers = sorted(epochs)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "acc")):
        for split, style in (("train", "o-"), ("valid", "s--")):
            points = [(n, epochs[n][split][metric]) for n in numbers if metric in epochs[n].get(split, {})]
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], style, label=split)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(output_png, dpi=100)
    plt.close(figure)


def _table(unit: str, rows: List[List[str]]) -> List[str]:
    header = ["dataset", "Snt", "Wrd" if unit == "wer" else "Chr", "Corr", "Sub", "Del", "Ins", "Err", "S.Err"]
    lines = ["|" + "|".join(header) + "|", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["|" + "|".join(row) + "|" for row in rows]
    return lines


def write_results(exp_dir: str, decode_dirs: Dict[str, str], output: str, description: Sequence[str] = ()) -> str:
    """Write the ``RESULTS.md`` of one experiment.

    Args:
        exp_dir: the ``exp/asr_<tag>`` directory (holds ``train.log``; the curves go to ``training_curves.png``).
        decode_dirs: ``{test set name: directory holding score_wer/ and score_cer/}``.
        output: path of the Markdown file.
        description: extra bullet lines (environment, configs, timings).

    Returns:
        The Markdown text.
    """
    lines = [f"# RESULTS: {os.path.basename(os.path.normpath(exp_dir))}", ""]
    lines += [f"- {item}" for item in description]
    epochs = parse_epoch_results(os.path.join(exp_dir, "train.log"))
    png = os.path.join(exp_dir, "training_curves.png")
    plot_curves(epochs, png, title=os.path.basename(os.path.normpath(exp_dir)))
    lines += [f"- epochs trained: {max(epochs)}", ""]
    for unit in UNITS:
        rows = []
        for name, directory in decode_dirs.items():
            counts = load_counts(directory, unit)
            n = max(counts.reference_length, 1)
            rows.append([name, str(counts.sentences), str(counts.reference_length),
                         f"{100.0 * counts.correct / n:.1f}", f"{100.0 * counts.substitutions / n:.1f}",
                         f"{100.0 * counts.deletions / n:.1f}", f"{100.0 * counts.insertions / n:.1f}",
                         f"{counts.error_rate:.1f}",
                         f"{100.0 * counts.sentence_errors / max(counts.sentences, 1):.1f}"])
        lines += [f"## {unit.upper()}", ""] + _table(unit, rows) + [""]
    lines += ["## WER per speaker (voice)", ""]
    for name, directory in decode_dirs.items():
        with open(os.path.join(directory, "score_wer", "per_speaker.tsv"), encoding="utf-8") as stream:
            speakers = [line.rstrip("\n").split("\t") for line in stream][1:]
        lines += [f"- {name}: " + ", ".join(f"{row[0]} {float(row[3]):.1f}" for row in speakers)]
    relative_png = os.path.relpath(png, os.path.dirname(os.path.abspath(output)))
    lines += ["", "## Training curves", "", f"![loss and accuracy per epoch]({relative_png})", ""]
    text = "\n".join(lines)
    with open(output, "w", encoding="utf-8") as stream:
        stream.write(text)
    return text


def seed_table(rows: Mapping[str, Sequence[str]], decode_tag: str, test_sets: Sequence[str]) -> str:
    """A Markdown table of WER over seeds: one row per configuration, mean and range per test set.

    Args:
        rows: ``{row label: [exp dir of each seed's run, ...]}``.
        decode_tag: name of the decoding directory inside each exp dir (``decode_<inference config>_<model>...``),
            or a glob matching exactly one there (rows whose configs decode different averaged checkpoints).
        test_sets: the test sets (columns); each run must have ``<exp>/<decode_tag>/<set>/score_wer/counts.json``.

    Returns:
        The table: label, number of seeds, epochs trained (their range when the runs differ), then per test set the
        mean WER, ``[min-max]`` over the seeds and the sample standard deviation.
    """
    header = ["config", "seeds", "epochs"] + [f"{name} WER % mean [min-max] (sd)" for name in test_sets]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|" + "---|" * len(test_sets)]
    for label, exp_dirs in rows.items():
        if not exp_dirs:
            raise ValueError(f"row {label!r}: no experiment directory")
        epochs = sorted({max(parse_epoch_results(os.path.join(exp, "train.log"))) for exp in exp_dirs})
        cells = [label, str(len(exp_dirs)), str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"]
        for name in test_sets:
            rates = []
            for exp in exp_dirs:
                directory = os.path.join(_decode_dir(exp, decode_tag), name)
                if not os.path.isfile(os.path.join(directory, "score_wer", "counts.json")):
                    raise FileNotFoundError(f"{directory}/score_wer/counts.json not found: decode and score {name} "
                                            f"of {exp} first (run.sh stages 6-7)")
                rates.append(load_counts(directory, "wer").error_rate)
            spread = f"{statistics.stdev(rates):.1f}" if len(rates) > 1 else "-"  # undefined for one seed
            cells.append(f"{statistics.mean(rates):.1f} [{min(rates):.1f}-{max(rates):.1f}] ({spread})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _decode_dir(exp: str, decode_tag: str) -> str:
    """The one directory of ``exp`` that ``decode_tag`` (a name or a glob) names."""
    matches = sorted(glob.glob(os.path.join(glob.escape(exp), decode_tag)))
    if len(matches) > 1:
        raise ValueError(f"--decode_tag {decode_tag!r} matches {len(matches)} directories of {exp}: "
                         f"{[os.path.basename(m) for m in matches]}")
    return matches[0] if matches else os.path.join(exp, decode_tag)


def _pairs(parser: argparse.ArgumentParser, option: str, items: Sequence[str]) -> Dict[str, str]:
    """``{name: value}`` of repeated ``option NAME=VALUE`` arguments; a parser error names a malformed one."""
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"{option} must be NAME=VALUE, got {item!r}")
        pairs[name] = value
    return pairs


def _seeds_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrid_encoders.recipes.report seeds",
                                     description="WER mean and range over seeds, one row per configuration.")
    parser.add_argument("--row", action="append", required=True, metavar="LABEL=GLOB",
                        help="a row label and a glob of its runs' exp dirs; repeatable")
    parser.add_argument("--decode_tag", required=True,
                        help="decoding directory name inside each exp dir, or a glob matching one")
    parser.add_argument("--test_sets", nargs="+", default=["test", "test_other"])
    args = parser.parse_args(argv)
    rows = {label: sorted(glob.glob(pattern)) for label, pattern in _pairs(parser, "--row", args.row).items()}
    try:
        print(seed_table(rows, args.decode_tag, args.test_sets), end="")
    except (FileNotFoundError, ValueError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["seeds"]:
        return _seeds_main(argv[1:])
    parser = argparse.ArgumentParser(description="Write RESULTS.md and the training-curve PNG of an experiment.")
    parser.add_argument("--exp_dir", required=True)
    parser.add_argument("--decode_dir", action="append", required=True, metavar="NAME=DIR",
                        help="test set name and its scored decoding directory; repeatable")
    parser.add_argument("--output", required=True)
    parser.add_argument("--description", action="append", default=[], help="a bullet line; repeatable")
    args = parser.parse_args(argv)
    decode_dirs = _pairs(parser, "--decode_dir", args.decode_dir)
    try:
        print(write_results(args.exp_dir, decode_dirs, args.output, args.description))
    except (FileNotFoundError, ValueError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
