"""Policy language, identities and resolution (arrives with the policy issue)."""
