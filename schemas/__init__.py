"""JSON Schemas of clickstream's events, shipped as package data `clickstream.schemas`
(read through clickstream.core.resources, never by a path relative to the source tree)."""
