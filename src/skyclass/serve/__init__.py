"""Serving: the ASGI app, Lambda handler, model registry, settings and S3 fetch, over core."""
