"""Test helpers that drive the real things: the agent process, its sockets, dockerd."""
