"""Inference backends: one module per kind behind `base.Backend`."""
