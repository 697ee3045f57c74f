"""Policies that pick an action for each context."""
