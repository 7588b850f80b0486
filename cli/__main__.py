"""``python -m cli``: the ``atlas`` command."""

import sys

from cli import main

sys.exit(main())
