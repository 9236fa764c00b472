import sys

from timeseries_aggregation.cli import main

sys.exit(main())
