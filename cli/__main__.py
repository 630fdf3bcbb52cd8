"""``python -m cli``: the ``mnist-tfx`` console script."""

import sys

from cli.main import main

sys.exit(main())
