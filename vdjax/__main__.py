import sys

from vdjax.cli.main import main

sys.exit(main())
