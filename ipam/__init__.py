"""Docker IpamDriver protocol: pools, node blocks, host-scope address allocation."""
