"""Observability like Hubble's: flows built from the monitor's events, Hubble's filters
over them, and Hubble's output forms.

``model`` turns a monitor event into a flow dict shaped as Hubble's ``flow.Flow`` JSON;
``filters`` holds Hubble's FlowFilter semantics, ``flags`` the ``observe`` flag parsing;
``formats`` prints flows as Hubble's compact, dict, table and json forms; ``servicemap``
folds flows into the service graph. All are pure (no I/O, no agent state); the agent's
store keeps the flows (``store``).
"""
