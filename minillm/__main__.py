"""`python -m minillm ...` is the `minillm` command, for a Python whose scripts folder is not on PATH."""

import sys

from minillm.cli import main

sys.exit(main())
