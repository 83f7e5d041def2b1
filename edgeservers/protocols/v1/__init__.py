"""Seldon's v1 protocol: REST dicts and gRPC SeldonMessages decoded to payloads, answered in their own form."""
