"""``python -m proxy``: the ciliumpy L7 proxy (see :mod:`proxy.server`)."""

import sys

from proxy.server import main

sys.exit(main())
