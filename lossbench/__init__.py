"""lossbench: which training loss should I use for my language model, and what does it cost?"""

__version__ = "0.1.0"
