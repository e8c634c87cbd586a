-- Versioned business events (docs/schema-versioning.md "Business events"). Every `lead_created`
-- names its schema in `schema` (`https://clickstream.dev/schemas/lead_created/1-0-0.json`,
-- schemas/lead_created.schema.json); `lead_events` now keeps it in a column of its own.
--
-- Stored leads are never rewritten: ADD COLUMN changes no part, and rows stored before this
-- migration read the column from their own `payload` (the exact event bytes, which always held
-- `schema`) through the DEFAULT, computed at read time. The stitcher's relay writes it explicitly
-- from now on (stitcher/event.py `lead_events_row`).
ALTER TABLE lead_events ADD COLUMN IF NOT EXISTS schema LowCardinality(String) DEFAULT JSONExtractString(payload, 'schema') AFTER event_id
;

-- v_leads: every lead in one current shape, whichever version it was stored in. A later version
-- of lead_created replaces this view in its own migration and upcasts the older rows here (an
-- ADDITION: the new field's default for older versions; a REVISION or MODEL change: the mapping
-- from the old fields), so SQL users never see two shapes. Attribution is the frozen copy, read
-- as stored; touches are flattened into plain columns for BI tools (first_/last_ + field).
-- `schema_version` is the SchemaVer of the version the lead was stored in (`1-0-0`).
CREATE OR REPLACE VIEW v_leads AS
SELECT
    event_id,
    lead_id,
    site_id,
    anonymous_id,
    occurred_at,
    emitted_at,
    session_id,
    landing_path,
    first_touch.utm_source AS first_utm_source,
    first_touch.utm_medium AS first_utm_medium,
    first_touch.utm_campaign AS first_utm_campaign,
    first_touch.utm_term AS first_utm_term,
    first_touch.utm_content AS first_utm_content,
    first_touch.referrer_host AS first_referrer_host,
    first_touch.channel AS first_channel,
    first_touch.landing_path AS first_landing_path,
    first_touch.ts AS first_ts,
    last_touch.utm_source AS last_utm_source,
    last_touch.utm_medium AS last_utm_medium,
    last_touch.utm_campaign AS last_utm_campaign,
    last_touch.utm_term AS last_utm_term,
    last_touch.utm_content AS last_utm_content,
    last_touch.referrer_host AS last_referrer_host,
    last_touch.channel AS last_channel,
    last_touch.landing_path AS last_landing_path,
    last_touch.ts AS last_ts,
    variants,
    properties,
    schema,
    extract(schema, '/lead_created/([0-9]+-[0-9]+-[0-9]+)\\.json$') AS schema_version
FROM lead_events
;
