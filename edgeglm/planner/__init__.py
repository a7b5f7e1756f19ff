"""The explainable planner: how a GLM model should run on a given machine.

Modules, in the order a plan is made:

- ``sources``, ``model``, ``virtual``: model facts from a GGUF, an HF folder
  or a bare config.json (sized through the GGUF converter's own planning);
- ``gpus``, ``runtimes``, ``bandwidth``: the detailed probes behind
  ``edgeglm.hardware.probe`` (NVML/sysfs/sysctl, ggml devices, ONNX Runtime
  providers, measured memory bandwidth);
- ``machine`` (+ ``hardware_classes.json``): what a plan may use of a machine;
- ``recipes``: validated per-model knowledge from recipes/*.json;
- ``memory``, ``placement``, ``strategies``: llama.cpp's memory accounting
  and where tensors go;
- ``policy``: every rule's numbers, as data;
- ``planner``, ``advice``, ``backend``: the decisions, with reasons;
- ``plan``, ``explain``, ``doctor_view``: the result, as JSON and for people.
"""
