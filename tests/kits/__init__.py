"""Shared test kits: harnesses and vectors used by several tiers."""
