"""ciliumpy: the agent package (app factory, configuration, CLI, kvstore, agent API)."""

__version__ = "0.1.0"
