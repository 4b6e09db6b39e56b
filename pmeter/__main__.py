import sys

from pmeter.cli import main

sys.exit(main())
