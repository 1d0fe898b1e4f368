"""medjson: teach a small language model to answer medical exam questions as strict JSON."""
