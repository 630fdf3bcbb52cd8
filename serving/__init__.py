"""What talks to the consumers of the pushed model.

An embedded server that speaks TF Serving's own REST and gRPC APIs over the
pushed base path (``server.py`` and the modules it wires: ``versions.py``,
``signatures.py``, ``rest_format.py``, ``rest_api.py``, ``grpc_api.py``,
``batching.py``, ``metrics.py``), a client for both APIs (``client.py``) and the
files that run the real ``tensorflow/serving`` in production (``deploy/``).
Nothing here trains or pushes a model; that is ``trainer/`` and ``components/``.
"""
