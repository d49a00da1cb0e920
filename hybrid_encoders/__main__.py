import sys

from hybrid_encoders.cli import main

sys.exit(main())
