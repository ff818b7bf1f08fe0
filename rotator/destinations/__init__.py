"""Destinations: where keys are written. One package per store kind (``vault/``, ``aws/``), each
with its schema, its construction and its destination behind ``contracts.Destination``;
:mod:`rotator.destinations.registry` lists the kinds (docs/adding-a-destination.md)."""
