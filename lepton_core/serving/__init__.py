"""Serving a model over HTTP with the same API on-prem and in the cloud: the server, a client, and
the parity check before cutover."""
