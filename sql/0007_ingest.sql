-- Ingestion: the flusher inserts spool records as they are (the collector's JSON, plus the spool
-- position and the parsed User-Agent fields) into `events_ingest`, a Null table: nothing is stored
-- there, its materialized view enriches each block and writes it to `events`. Doing URL, UTM,
-- referrer and channel work here, set-based inside ClickHouse, instead of per row in Python, is
-- what lets the flusher keep up with ClickHouse's own insert speed (BENCHMARKS.md).
--
-- Exactly once still holds: the insert carries insert_deduplication_token, the Null table keeps no
-- blocks, and with deduplicate_blocks_in_dependent_materialized_views = 1 every view target below
-- it (`events`, then `sessions`, `variant_exposures`) drops a retried block by its own window
-- (verified on chDB 26.9: the same token twice lands once in `events` and once in each aggregate).
--
-- Functions are global to a ClickHouse server (not per database), hence the `clickstream_` prefix;
-- on a cluster create them ON CLUSTER. They mirror flusher/channel.py, the documented reference
-- (GA4 default channel group), and tests check that both agree on every input.

-- 'www.google.co.uk' -> 'google', 'l.facebook.com' -> 'facebook', 't.co' -> 't'
CREATE OR REPLACE FUNCTION clickstream_host_parts AS (host) ->
    arrayFilter(p -> p != '', splitByChar('.', lowerUTF8(trimBoth(host))))
;
CREATE OR REPLACE FUNCTION clickstream_label_of_parts AS (parts) ->
    multiIf(length(parts) >= 3 AND has(['co', 'com', 'org', 'net', 'gov', 'ac', 'edu', 'ne', 'or'], parts[-2])
                AND length(parts[-1]) = 2, parts[-3],
            length(parts) >= 2, parts[-2],
            length(parts) = 1, parts[1],
            '')
;
CREATE OR REPLACE FUNCTION clickstream_site_label AS (host) -> clickstream_label_of_parts(clickstream_host_parts(host))
;
-- the source label of a touch: the UTM source (a label, or a host reduced to its label), else the referrer's label
CREATE OR REPLACE FUNCTION clickstream_source_label AS (utm_source, referrer_host) ->
    if(utm_source != '',
       if(position(utm_source, '.') > 0, clickstream_site_label(utm_source), lowerUTF8(trimBoth(utm_source))),
       clickstream_site_label(referrer_host))
;
CREATE OR REPLACE FUNCTION clickstream_is_search AS (source) ->
    has(['google', 'bing', 'yahoo', 'duckduckgo', 'baidu', 'yandex', 'ecosia', 'naver', 'ask', 'aol', 'startpage',
         'qwant', 'seznam', 'sogou', 'so', 'brave', 'search', 'kagi', 'perplexity'], source)
;
CREATE OR REPLACE FUNCTION clickstream_is_social AS (source) ->
    has(['facebook', 'fb', 'instagram', 'linkedin', 'lnkd', 'twitter', 't', 'x', 'reddit', 'pinterest', 'youtube',
         'tiktok', 'snapchat', 'threads', 'mastodon', 'whatsapp', 'telegram', 'tumblr', 'vk', 'quora', 'discord',
         'bsky', 'weibo', 'xing', 'medium'], source)
;
CREATE OR REPLACE FUNCTION clickstream_is_paid AS (medium) ->
    medium != '' AND match(medium, '^(.*cp.*|ppc|retargeting|paid.*)$')
;
CREATE OR REPLACE FUNCTION clickstream_is_email AS (text) ->
    match(text, '^(email|e-mail|e_mail|e mail|newsletter)$')
;
-- (source label, lower-cased medium, raw utm_source, raw utm_medium, referrer_host) -> channel, in GA4's order
CREATE OR REPLACE FUNCTION clickstream_channel_of AS (source, medium, utm_source, utm_medium, referrer_host) ->
    multiIf(utm_source = '' AND utm_medium = '' AND referrer_host = '', 'direct',
            clickstream_is_paid(medium) AND clickstream_is_search(source), 'paid_search',
            clickstream_is_paid(medium) AND clickstream_is_social(source), 'paid_social',
            has(['display', 'banner', 'expandable', 'interstitial', 'cpm'], medium), 'display',
            medium = 'organic' OR (clickstream_is_search(source) AND medium = ''), 'organic_search',
            clickstream_is_social(source)
                OR has(['social', 'social-network', 'social-media', 'sm', 'social network', 'social media'], medium),
                'organic_social',
            clickstream_is_email(medium) OR clickstream_is_email(lowerUTF8(trimBoth(utm_source))), 'email',
            medium = 'affiliate', 'affiliates',
            clickstream_is_paid(medium), 'paid_other',
            medium = 'referral' OR (utm_source = '' AND utm_medium = '' AND referrer_host != ''), 'referral',
            clickstream_is_search(source), 'organic_search',
            'unassigned')
;
CREATE OR REPLACE FUNCTION clickstream_channel AS (utm_source, utm_medium, referrer_host) ->
    clickstream_channel_of(clickstream_source_label(utm_source, referrer_host), lowerUTF8(trimBoth(utm_medium)),
                           utm_source, utm_medium, referrer_host)
;
-- external referrer host without 'www.', '' for none or for the page's own host
CREATE OR REPLACE FUNCTION clickstream_referrer_host AS (referrer, url) ->
    if(replaceRegexpOne(lower(domain(referrer)), '^www\\.', '') IN ('', replaceRegexpOne(lower(domain(url)), '^www\\.', '')),
       '',
       replaceRegexpOne(lower(domain(referrer)), '^www\\.', ''))
;
-- a UTM field: the event's `utm` object when any of its fields is set, else the URL's utm_<name>
CREATE OR REPLACE FUNCTION clickstream_utm AS (utm, url, field, name) ->
    substring(if(utm.1 != '' OR utm.2 != '' OR utm.3 != '' OR utm.4 != '' OR utm.5 != '',
                 field,
                 decodeURLFormComponent(extractURLParameter(url, name))), 1, 256)
;

-- The collector's record, field for field (schemas/event.schema.json + the collector's stamps:
-- ts and received_at in epoch ms, user_agent, ip_hash), plus what the flusher adds: the spool
-- position and the User-Agent fields parsed by ua-parser / crawlerdetect (cached per distinct UA).
CREATE TABLE IF NOT EXISTS events_ingest
(
    type            String,
    site_id         String,
    anonymous_id    String,
    session_id      String,
    ts              Int64,
    url             String,
    event_id        UUID,
    referrer        String,
    title           String,
    utm             Tuple(source String, medium String, campaign String, term String, content String),
    variants        Map(String, String),
    props           Map(String, String),
    screen          Tuple(w UInt32, h UInt32),
    lang            String,
    user_agent      String,
    ip_hash         String,
    received_at     Int64,
    spool_segment   String,
    spool_offset    UInt64,
    browser         String,
    browser_version String,
    os              String,
    os_version      String,
    device_type     String,
    is_bot          UInt8
)
ENGINE = Null
;

CREATE MATERIALIZED VIEW IF NOT EXISTS events_ingest_mv TO events AS
SELECT
    site_id,
    fromUnixTimestamp64Milli(ts, 'UTC') AS ts,
    event_id,
    type,
    anonymous_id,
    session_id,
    url,
    lower(domain(url)) AS host,
    if(path(url) = '', '/', path(url)) AS path,
    referrer,
    clickstream_referrer_host(referrer, url) AS referrer_host,
    title,
    clickstream_channel(utm_source, utm_medium, referrer_host) AS channel,
    clickstream_utm(utm, url, utm.source, 'utm_source') AS utm_source,
    clickstream_utm(utm, url, utm.medium, 'utm_medium') AS utm_medium,
    clickstream_utm(utm, url, utm.campaign, 'utm_campaign') AS utm_campaign,
    clickstream_utm(utm, url, utm.term, 'utm_term') AS utm_term,
    clickstream_utm(utm, url, utm.content, 'utm_content') AS utm_content,
    variants,
    props,
    screen.w AS screen_w,
    screen.h AS screen_h,
    lang,
    user_agent,
    browser,
    browser_version,
    os,
    os_version,
    device_type,
    is_bot,
    ip_hash,
    fromUnixTimestamp64Milli(received_at, 'UTC') AS received_at,
    spool_segment,
    spool_offset
FROM events_ingest
;
