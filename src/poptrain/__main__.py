"""``python -m poptrain`` runs the command line."""

import sys

from poptrain.cli.main import main

sys.exit(main())
