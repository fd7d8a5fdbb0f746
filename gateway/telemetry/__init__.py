"""What the gateway tells its operators: Prometheus metrics, log output, redaction, the access log.

A low floor: auth and proxy record into it; it imports only config, errors and request keys.
"""
