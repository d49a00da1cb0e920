"""``python -m hybrid_encoders.bench``: the same as ``hybrid-encoders bench``."""

import argparse
import sys

from hybrid_encoders.commands import bench


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrid_encoders.bench", description=bench.HELP)
    bench.add_arguments(parser)
    return bench.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
