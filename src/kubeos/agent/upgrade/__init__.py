"""Upgrade sources: fetch, verify and write a new root into the inactive slot."""
