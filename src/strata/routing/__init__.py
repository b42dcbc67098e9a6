"""Routing: from the public model name a client asks for to the deployment that serves it."""
