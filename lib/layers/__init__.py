"""Layers shared by the chapters (each lives in its own module, re-exported here)."""

from .blurpool import BlurMaxPool, BlurPool, ConvBlurPool, MaxBlurPool  # noqa: F401  (anti-aliasing chapter)
from .circular import CircularConv2d  # noqa: F401  (frequency-sensitivity chapter)
from .padding import CircularPadConv2d, circular_pad  # noqa: F401  (circular padding as one gather)
from .windowed import WindowedConv2d  # noqa: F401  (spectral-leakage chapter)
