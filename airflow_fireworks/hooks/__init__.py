"""Hooks: a Fireworks connection turned into the Fireworks client."""
