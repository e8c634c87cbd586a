"""The stitcher: a conversion becomes a lead_created business event with frozen attribution."""
