"""``python -m nas_lab.cli ...`` (also ``torchrun ... -m nas_lab.cli train-supernet ...``)."""

import sys

from nas_lab.cli import main

sys.exit(main())
