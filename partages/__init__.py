"""Synthetic, noised and real French clinical text for training and testing frugal medical language models

Modules:

- `partages.evaluate`: Entity-level precision, recall and F1 with bootstrap confidence intervals, robustness sweeps over noise doses, frugality beside quality, the result tables of a run and the analysis notebooks that read them."""

__version__ = "0.1.0"
