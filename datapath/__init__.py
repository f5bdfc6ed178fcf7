"""Datapath: netlink plumbing (veths, addresses, routes) and, later, BPF programs."""
