"""Datapath: netlink plumbing (veths, addresses, routes), the BPF programs (``bpf/``) with
their loader, maps and tc attachment, the event reader and the overlay device."""
