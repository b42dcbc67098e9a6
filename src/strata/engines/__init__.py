"""Engines: model backends behind one small protocol (``base.Engine``), built from config by name."""
