"""Composition root: what wires the gateway together and runs it (the control-loop runner)."""
