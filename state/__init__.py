"""Low-level shared infrastructure: the kvstore contract and backends, the local SQLite
store, and Docker's plugin wire format. Imports nothing of the agent, the driver, IPAM,
the datapath or the policy packages; every one of them may import it."""
