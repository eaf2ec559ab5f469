"""Rechecks of registered inboxes: the registry, inbox health, pacing, their settings, and the
hooks the worker calls."""
