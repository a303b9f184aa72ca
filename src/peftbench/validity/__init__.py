"""Validity of the offline tasks: do they rank PEFT's methods as the published GPU benchmarks do (docs/validity.md)."""
