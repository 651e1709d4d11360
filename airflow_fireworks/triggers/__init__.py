"""Triggers: asynchronous waits for deployment states and hotloads, run in the triggerer."""
