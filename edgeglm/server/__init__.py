"""edgeglm serve: an OpenAI-compatible HTTP server (see edgeglm/server/app.py)."""
