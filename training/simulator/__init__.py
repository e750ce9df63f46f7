"""A simulated subscription business with a known ground truth (see docs/simulator.md)."""
