"""A transform that ignores the sample's seeded generator: the kind of nondeterminism train.deterministic's
test must catch (loaded through --import / imports, as a user's module would be)."""
import random
from dataclasses import replace

import numpy as np

from retdet.registry import TRANSFORMS

_ENTROPY = random.SystemRandom()  # the operating system's entropy: different in every run


@TRANSFORMS.register()
class UnseededBrightness:
    """Adds a brightness offset drawn from the OS's entropy (a new one for every image, in every run)."""

    def __call__(self, sample, rng, source=None):
        offset = _ENTROPY.uniform(-40.0, 40.0)
        image = np.clip(sample.image.astype(np.float32) + offset, 0, 255).astype(np.uint8)
        return replace(sample, image=image)
