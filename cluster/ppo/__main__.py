"""`python -m cluster.ppo --config job.yaml`: what `ray job submit` runs."""

import sys

from cluster.ppo.run import main

sys.exit(main())
