"""Code that runs inside engine worker processes (never imported by the gateway)."""
