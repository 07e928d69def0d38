"""`python -m pipelines.cli …` runs the same `matting` command."""

import sys

from pipelines.cli import main

sys.exit(main())
