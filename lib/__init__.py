"""Shared code of the book *Signal processing inside convolutional networks*.

Chapters import from the sub-modules (``lib.data``, ``lib.training``, ``lib.results`` ...). Importing ``lib`` itself
stays light: no Jupyter package is needed, so the experiments also run on a bare GPU machine.
"""

__version__ = "0.1.0"
