"""Hubble's own gRPC API for the agent's flows: the Observer service of Cilium's
``observer.proto`` (``server``), the conversions between ciliumpy's flow dicts and
Hubble's messages (``convert``), the vendored protos (``protos/``) and the Python code
generated from them (``gen/``, by ``scripts/hubble-protos.sh``)."""
