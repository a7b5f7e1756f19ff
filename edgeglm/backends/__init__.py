"""Backends run converted models. Each implements the small protocol in ``base``."""
