import sys

from kcaps_training.cli import main

sys.exit(main())
