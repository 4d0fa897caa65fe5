#!/usr/bin/env bash
# How cairn-sim's cost grows with nodes and with stored stripes: runs the year-10k scenario's
# network (monthly outages, 5 % of disks lost a year, hourly repair passes and proof epochs,
# 1 % adversaries) at each size for DAYS days and prints a row per run: nodes, stripes, events,
# wall seconds, events per second and peak memory.
#
#   benches/scripts/sim-scale.sh [DAYS] [NODES:STRIPES ...]
#
# DAYS defaults to 30; the sizes to 10000:100000 30000:100000 100000:100000 10000:300000
# 10000:1000000. Uses the release build (`cargo build --release -p cairn-sim`).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${CARGO_TARGET_DIR:-$here/target}/release/cairn-sim"
[ -x "$bin" ] || { echo "build it first: cargo build --release -p cairn-sim" >&2; exit 1; }
days="${1:-30}"
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10000:100000 30000:100000 100000:100000 10000:300000 10000:1000000)
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
printf '%8s %9s %5s %10s %9s %12s %9s\n' nodes stripes days events seconds events/s "RSS MiB"
for size in "${sizes[@]}"; do
  nodes="${size%%:*}"
  stripes="${size##*:}"
  sed -e "s/^days = .*/days = $days/" \
      -e "s/^nodes = .*/nodes = $nodes/" \
      -e "s/^objects = .*/objects = $((stripes / 20))/" \
      "$here/sim/scenarios/year-10k.toml" >"$dir/s.toml"
  /usr/bin/time -f '%e %M' -o "$dir/time" "$bin" run "$dir/s.toml" --json >"$dir/r.json"
  read -r secs rss <"$dir/time"
  events="$(python3 -c "import json; print(json.load(open('$dir/r.json'))['events'])")"
  printf '%8s %9s %5s %10s %9s %12.0f %9.0f\n' "$nodes" "$stripes" "$days" "$events" "$secs" \
    "$(python3 -c "print($events / max($secs, 1e-9))")" "$(python3 -c "print($rss / 1024)")"
done
