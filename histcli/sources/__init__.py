"""Readers that turn user files into cells for the store."""
