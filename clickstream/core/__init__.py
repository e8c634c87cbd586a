"""The bottom layer: what every component needs, named for what it is (docs/architecture.md "Layers").

settings, resources (package data), spool, clickhouse (access and migrations), times, errors
(one hierarchy, one HTTP mapping), http (body limits, bearer tokens), schema (JSON Schema
validation), component (the Protocol `serve` composes). Nothing here imports a component.
"""
