"""The cloud-migration simulator: scenarios from a spec or a seeded generator, and a gymnasium
environment that steps one simulated hour at a time."""
