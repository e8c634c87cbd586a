"""clickstream: beacon -> collector -> durable spool -> flusher -> ClickHouse, plus the lead stitcher."""

from pathlib import Path

__version__ = "0.1.0"

#: Repository root when installed editable (`pip install -e .`): schemas/ and sql/ live there.
ROOT = Path(__file__).resolve().parent.parent
SCHEMAS_DIR = ROOT / "schemas"
SQL_DIR = ROOT / "sql"
