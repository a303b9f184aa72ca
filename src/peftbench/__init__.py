"""peftbench: a fair referee for parameter-efficient fine-tuning methods."""

__version__ = "0.1.0"
