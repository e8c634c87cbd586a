#!/usr/bin/env bash
# What the tests need from the system, installed when missing: Debian's chromium (browser tests),
# wrk (benchmarks), Node.js and npm (the Node ClickHouse client). As root on Debian it installs them
# quietly (the log is shown only on failure); otherwise it prints the one command to run.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages for the tests: ${need[*]}"
  log=$(mktemp)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "could not install ${need[*]} (log above)" >&2
    exit 1
  fi
  rm -f "$log"
else
  echo "The tests need ${need[*]}: install them with  sudo apt-get install -y ${need[*]}  (Debian/Ubuntu), then rerun." >&2
  exit 1
fi
