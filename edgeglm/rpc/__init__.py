"""Several machines through llama.cpp's RPC backend (``rpc-server`` / ``--rpc``).

EdgeGLM builds nothing for the wire: workers run llama.cpp's own RPC server
(``edgeglm worker``) and the client registers them as llama.cpp devices.
This package holds what the planner and the runtime share about workers.
"""
