"""`python -m worker ...` is `inboxcheck ...`."""

import sys

from worker.cli.main import main

sys.exit(main())
