"""``python -m exporter``: the procsnap command."""

import sys

from exporter.cli import main

sys.exit(main())
