"""Model templates: the library of architecture primitives the builtin Coder renders.

Each ``<name>.py`` here is the body of a model module obeying the contract in
``harmonycell.sandbox.harness`` (``build_model(info)``); the Coder prepends ``_common.py`` and
writes the result as the node's ``model.py``. Templates import only torch, math and numpy,
because they run inside the sandbox image and pass the same static checks as LLM-written code.
"""
