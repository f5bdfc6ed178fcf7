"""Docker NetworkDriver protocol: networks, endpoints, veth plumbing."""
