"""Instruction-tuning data from an ensemble of small open models (Ensemble-Instruct)."""

__version__ = "0.1.0"
