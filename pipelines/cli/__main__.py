"""`python -m pipelines.cli ...`: the `shardguard` command."""

import sys

from pipelines.cli.dispatch import main

sys.exit(main())
