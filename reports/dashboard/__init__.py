"""The built-in dashboard (`GET /dashboard` on the query port): one page of static HTML, CSS and
JavaScript with a vendored chart library (uPlot, static/vendor/, re-vendored by
deploy/vendor-charts.sh), whose every number comes from the queries of `queries.py` sent through the
query port, or from `clickstream experiments`' own code (`app.Dashboard.api_experiments`).
docs/dashboards.md "The built-in dashboard" describes the page, its queries and its URL.
"""

from reports.dashboard.app import Dashboard, DashboardConfig

__all__ = ["Dashboard", "DashboardConfig"]
