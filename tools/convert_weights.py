#!/usr/bin/env python
"""`retdet-convert-weights` from a checkout: the implementation and its help are in retdet/tools/convert_weights.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retdet.tools.convert_weights import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
