"""clickstream: beacon -> collector -> durable spool -> flusher -> ClickHouse, plus the lead stitcher.

Layers (docs/architecture.md): `clickstream.core` at the bottom; the components `collector`,
`flusher`, `stitcher` and `reports` above it; `clickstream.cli`, `clickstream.runner` and
`clickstream.web` on top.
"""

from clickstream.core.resources import version

__version__ = version()
