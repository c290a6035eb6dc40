#!/usr/bin/env python
"""`retdet-analyze-errors` from a checkout: the implementation and its help are in retdet/tools/analyze_errors.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retdet.tools.analyze_errors import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
