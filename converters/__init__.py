"""Converters from Hugging Face GLM checkpoints to deployable formats.

Installed as ``edgeglm.converters``. Each output format is a subpackage;
nothing here imports Textual.
"""
