"""Model registry: registered models -> immutable versions -> aliases (``registry:NAME@ALIAS`` in a deployment)."""
