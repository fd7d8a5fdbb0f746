"""Who the caller is: tokens, passwords, sessions, revocation, login limits, the /user/* endpoints.

Above config, errors and storage; below proxy, which needs only `Identity` and the bearer check.
"""
