"""The demo site: two landing pages, UTM links, an A/B hero, SPA navigation, a tracked
button and a signup form whose handler is the conversion hook (it calls the stitcher).

`python -m deploy.demo` (what `make demo` runs) starts `clickstream serve` and this site together;
`create_app(DemoConfig(...))` builds the site alone (the browser tests use it).
"""

from deploy.demo.app import DemoConfig, create_app

__all__ = ["DemoConfig", "create_app"]
