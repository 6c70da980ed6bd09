import sys

from shardgrid.cli import main

sys.exit(main())
