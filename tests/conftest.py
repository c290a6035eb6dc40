import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")

# Tests must not see a user's own registrations: each test that registers uses a fresh registry or
# removes what it added (see the `scratch_registry` fixture).


@pytest.fixture
def scratch_registry():
    """A throw-away registry, removed from the global list afterwards."""
    from retdet.registry import ALL_REGISTRIES, Registry

    made = []

    def make(name):
        reg = Registry(name)
        made.append(name)
        return reg

    yield make
    for name in made:
        ALL_REGISTRIES.pop(name, None)


@pytest.fixture
def retdet_log():
    """The messages logged to the "retdet" logger during the test (it may not propagate to root)."""
    import logging

    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler, log = Collect(level=logging.DEBUG), logging.getLogger("retdet")
    log.addHandler(handler)
    yield messages
    log.removeHandler(handler)
