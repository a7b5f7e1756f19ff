"""The explainable planner: how a GLM model should run on a given machine.

Modules, in the order a plan is made:

- ``sources``, ``model``, ``virtual``: model facts from a GGUF, an HF folder
  or a bare config.json (sized through the GGUF converter's own planning);
- a ``HardwareProfile`` from ``edgeglm.hardware`` (probed, or read from a
  profile file): the machine, which this package reads and never probes itself;
- ``machine`` (+ ``hardware_classes.json``): what a plan may use of a machine;
- ``recipes``: validated per-model knowledge from recipes/*.json;
- ``memory``, ``placement``, ``strategies``: llama.cpp's memory accounting
  and where tensors go;
- ``policy``: every rule's numbers, as data;
- ``planner``, ``advice``, ``backend``: the decisions, with reasons;
- ``plan``, ``explain``: the result, as JSON and for people;
- ``cluster``, ``cluster_explain``: the same model split over this machine
  and llama.cpp RPC workers (``plan --rpc``), with the network per token.
"""
