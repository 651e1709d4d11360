"""Operators: deployment lifecycle (create, update, hotload, scale to zero, delete) and sampling."""
