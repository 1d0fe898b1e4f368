"""What predict and the service need beyond the answering path: reading input exactly, writing
output that a killed run never corrupts, and holding the HTTP service up under hostile clients."""
