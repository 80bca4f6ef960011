from __future__ import annotations

import sys

from sslsearch.cli import main

sys.exit(main())
