"""Sandbox layers for the worker process tree."""
