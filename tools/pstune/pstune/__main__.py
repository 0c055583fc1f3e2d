"""`python3 -m pstune ...`: the pstune command line (pstune.cli)."""

import sys

from pstune.cli import main

sys.exit(main())
