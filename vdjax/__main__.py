import sys

from vdjax.cli import main

sys.exit(main())
