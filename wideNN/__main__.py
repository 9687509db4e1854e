"""``python -m wideNN`` is the ``wideNN`` command (the harness in :mod:`wideNN.lab`)."""
import sys

from wideNN.lab.cli import main

sys.exit(main())
