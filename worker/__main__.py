"""`python -m worker ...` is `inboxcheck ...`."""

import sys

from worker.cli import main

sys.exit(main())
