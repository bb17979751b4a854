"""Numpy-only trajectory timing, safety filter and controller model, shared by ros/ and sim/."""
