"""python -m engine.cli: the facet command."""

import sys

from engine.cli import main

sys.exit(main())
