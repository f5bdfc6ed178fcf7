"""Policy language: parsing and validation, labels and identities, the semantics
(``engine``), resolution into datapath entries and ``trace``. Semantics:
``docs/policy-semantics.md``."""
