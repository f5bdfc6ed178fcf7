"""ciliumpy's transparent L7 proxy: HTTP/1.1, h2c and gRPC policy enforcement.

Modules: :mod:`proxy.state` (state file, verdicts), :mod:`proxy.events` (L7 event
datagrams), :mod:`proxy.context` (per-connection context, upstream sockets),
:mod:`proxy.http1`, :mod:`proxy.http2`, :mod:`proxy.server`. Rule matching is
:mod:`policies.http_rules` (pure, shared with ``ciliumpy policy trace``)."""
