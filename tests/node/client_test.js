// Drives the official Node client (@clickhouse/client) against clickstream's query port and prints one
// JSON report on stdout; tests/integration/query_port/test_clients.py runs it and checks the report.
// Input (stdin, JSON): {"url", "username", "password", "queries": [SQL], "site"}.
'use strict'
const { createClient, ClickHouseError } = require('@clickhouse/client')

function errorInfo(err) {
  return {
    isClickHouseError: err instanceof ClickHouseError,
    code: err.code ?? null,
    type: err.type ?? null,
    message: String(err.message),
  }
}

async function failure(run) {
  try {
    await run()
    return { error: null }
  } catch (err) {
    return { error: errorInfo(err) }
  }
}

async function readStdin() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return JSON.parse(Buffer.concat(chunks).toString('utf8'))
}

async function main() {
  const input = await readStdin()
  const { url, username, password } = input
  const report = { results: {} }
  const client = createClient({
    url, username, password, database: 'clickstream',
    compression: { response: true, request: false },
    clickhouse_settings: { output_format_json_quote_64bit_integers: 0 },
  })
  try {
    report.ping = await client.ping()
    for (const query of input.queries) {
      const rs = await client.query({ query, format: 'JSONEachRow' })
      report.results[query] = await rs.json()
      report.lastHeaders = {
        format: rs.response_headers['x-clickhouse-format'] ?? null,
        summary: rs.response_headers['x-clickhouse-summary'] ?? null,
        encoding: rs.response_headers['content-encoding'] ?? null,
      }
    }
    const bound = await client.query({
      query: 'SELECT day, visitors, sessions FROM v_daily_traffic WHERE site_id = {site:String} ORDER BY day',
      format: 'JSONEachRow',
      query_params: { site: input.site },
    })
    report.bound = await bound.json()
    report.insert = await failure(() => client.command({ query: "INSERT INTO events (site_id) VALUES ('x')" }))
    report.fileFunction = await failure(() => client.query({
      query: "SELECT * FROM file('/etc/passwd', 'LineAsString')", format: 'JSONEachRow' }).then((r) => r.json()))
  } finally {
    await client.close()
  }
  const bad = createClient({ url, username, password: 'wrong' })
  report.wrongPassword = await failure(() => bad.query({ query: 'SELECT 1', format: 'JSONEachRow' }).then((r) => r.json()))
  await bad.close()
  process.stdout.write(JSON.stringify(report))
}

main().catch((err) => {
  process.stderr.write(String((err && err.stack) || err))
  process.exit(1)
})
