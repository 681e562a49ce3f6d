"""`python -m autoprumux.cli`: the `autoprumux` command."""

import sys

from autoprumux.cli import main

sys.exit(main())
