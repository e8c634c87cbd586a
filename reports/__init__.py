"""Reports: what marketing reads. Experiments and their statistics, the read-only SQL interface,
and the query routing of `clickstream sql` (docs/architecture.md "Layers")."""
