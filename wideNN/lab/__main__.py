"""``python -m wideNN.lab`` is the ``wideNN`` command."""
import sys

from wideNN.lab.cli import main

sys.exit(main())
