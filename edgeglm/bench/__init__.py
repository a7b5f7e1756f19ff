"""Latency against quality, measured together and reproducibly (``edgeglm bench``)."""
