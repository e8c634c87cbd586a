"""Deployment helpers and the demo site."""
