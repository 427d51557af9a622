"""``python -m optizoo.cli``: the ``optizoo`` command."""

import sys

from optizoo.cli import main

sys.exit(main())
