"""Fabric's HTTP API: one module per area, the envelope, the route table and serializers."""
