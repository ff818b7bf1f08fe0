"""Destinations: where keys are written. One module per backend behind `contracts.Destination`."""
