"""`python -m monosemantic` is the `monosemantic` command."""

import sys

from monosemantic.cli import main

sys.exit(main())
