"""``python -m wideNN`` is the ``wideNN`` command."""
import sys

from wideNN.cli import main

sys.exit(main())
