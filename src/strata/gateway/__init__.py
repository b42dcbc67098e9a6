"""The OpenAI-compatible gateway: HTTP surface (one module per resource) and the request pipeline."""
