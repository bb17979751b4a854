"""Demonstration datasets, dense policy training and pruner distillation."""
