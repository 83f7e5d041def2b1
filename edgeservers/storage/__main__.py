"""`python -m edgeservers.storage <model_uri> <dest_dir> ...`: the storage initializer."""

import sys

from . import main

sys.exit(main())
