"""``hybrid-encoders convert SOURCE --checkpoint FILE --out DIR``: import another toolkit's encoder checkpoint.

Writes ``DIR/encoder.pth`` (for ESPnet's ``--init_param DIR/encoder.pth``) and ``DIR/encoder_conf.yaml`` (the
``encoder`` / ``encoder_conf`` to put in the training or inference config). See :mod:`hybrid_encoders.convert`.
"""

import argparse
import importlib

NAME = "convert"
HELP = "convert a NeMo / icefall encoder checkpoint into ESPnet-loadable weights and an encoder_conf"

# source name -> (importer module with convert(checkpoint, out_dir), help text)
CONVERTERS = {
    "nemo-squeezeformer": (
        "hybrid_encoders.convert.nemo_squeezeformer",
        "NeMo SqueezeformerEncoder: a .nemo file (stt_en_squeezeformer_ctc_*) or a saved state dict with its config",
    ),
    "icefall-zipformer": (
        "hybrid_encoders.convert.icefall_zipformer",
        "icefall Zipformer (egs/librispeech/ASR/zipformer): pretrained.pt / epoch-N.pt or a raw state dict",
    ),
}
# per-source extra options: source -> [(flag, add_argument keywords)], passed to convert() by their dest name
EXTRA_OPTIONS = {
    "icefall-zipformer": [
        ("--preset", {"choices": ("s", "m", "l"), "help": "check the weights against this preset and name it in "
                      "the config (default: configuration inferred from the weights)"}),
        ("--causal", {"action": "store_true", "help": "the checkpoint is a streaming model (icefall --causal 1); "
                      "required for one, refused for others"}),
        ("--chunk-size", {"metavar": "LIST", "help": "with --causal: the model's icefall --chunk-size, e.g. "
                          "16,32,64,-1 (the default); its first entry becomes the decoding chunk"}),
        ("--left-context-frames", {"metavar": "LIST", "help": "with --causal: the model's icefall "
                                   "--left-context-frames, e.g. 64,128,256,-1 (the default)"}),
    ],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sources = parser.add_subparsers(dest="source", metavar="SOURCE")
    sources.required = True
    for name, (_, help_text) in CONVERTERS.items():
        source = sources.add_parser(name, help=help_text, description=help_text)
        source.add_argument("--checkpoint", required=True, help="checkpoint file to convert")
        source.add_argument("--out", required=True, help="output directory (created if needed)")
        for flag, options in EXTRA_OPTIONS.get(name, []):
            source.add_argument(flag, **options)


def run(args: argparse.Namespace) -> int:
    importer = importlib.import_module(CONVERTERS[args.source][0])
    try:
        dests = [flag.lstrip("-").replace("-", "_") for flag, _ in EXTRA_OPTIONS.get(args.source, [])]
        written = importer.convert(args.checkpoint, args.out, **{dest: getattr(args, dest) for dest in dests})
    except (ValueError, FileNotFoundError) as error:
        print(f"hybrid-encoders convert {args.source}: {error}")
        return 1
    print(f"weights: {written['weights']}  (use --init_param {written['weights']})")
    print(f"config:  {written['config']}")
    return 0
