import sys

from pynfsd.cli import main

sys.exit(main())
