#!/usr/bin/env python
"""`retdet-demo` from a checkout: the implementation and its help are in retdet/tools/demo.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retdet.tools.demo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
