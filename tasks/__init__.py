"""Prefect tasks: thin wrappers over lepton_core that add policy (retries, caching, artifacts)."""
