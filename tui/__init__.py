"""The Textual app (installed as ``edgeglm.tui``); the only part of EdgeGLM that imports Textual."""
