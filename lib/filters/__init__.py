"""Fixed filters used across the book: anti-aliasing blurs, DCT low-pass smoothing, tapering windows."""

from .blur import blur_filter, BLUR_FAMILIES  # noqa: F401  (anti-aliasing chapter)
from .dct import dct_lowpass  # noqa: F401  (spatial-mixing chapter)
from .windows import window, WINDOWS  # noqa: F401  (spectral-leakage chapter)
