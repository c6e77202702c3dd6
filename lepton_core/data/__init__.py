"""Data migration: copy datasets to an object store and back, checksummed, resumable, verified."""
