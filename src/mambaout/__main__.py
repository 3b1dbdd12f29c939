"""`python -m mambaout ...` (what torchrun launches: `torchrun --nproc_per_node 8 -m mambaout train ...`)."""

import sys

from mambaout.cli import main

sys.exit(main())
