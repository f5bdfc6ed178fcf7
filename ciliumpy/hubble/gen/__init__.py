"""Generated from ciliumpy/hubble/protos by scripts/hubble-protos.sh: do not edit."""
