"""``python -m fusedrnn.autotune``: the tuning CLI (see ``fusedrnn.autotune.cli``)."""

import sys

if __name__ == "__main__":
    from .cli import main

    sys.exit(main())
