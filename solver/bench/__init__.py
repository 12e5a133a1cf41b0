"""Tooling beside the solver, off its one-way stack: the benches, the GPU self-check and the GPU session."""
