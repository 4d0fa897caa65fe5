#!/usr/bin/env bash
# Uploads through the S3 gateway while a storage node dies silently (`kill -9`: its sockets
# vanish without a close, so the uploader hears nothing). Prints the wall time of a 256 MiB
# `aws s3 cp` on a healthy devnet, with a node killed 1.5 s into it, and right after; then reads
# every object back and compares it.
#
#   benches/scripts/node-death.sh [BIN_DIR]     # BIN_DIR holds cairn, cairn-node, cairn-gateway
#
# BIN_DIR defaults to the release build (`cargo build --release --workspace --bins`). Needs the
# aws CLI (`./scripts/setup --s3-clients` installs it into the test virtualenv) and port 9000.
set -euo pipefail
bin="${1:-${CARGO_TARGET_DIR:-$(dirname "$0")/../../target}/release}"
dir="$(mktemp -d)"
data="$dir/object"
venv="${CAIRN_VENV:-${HOME:-/tmp}/.cache/cairn/venv}"
[ -x "$venv/bin/aws" ] && export PATH="$venv/bin:$PATH"
command -v aws >/dev/null || { echo "needs the aws CLI: ./scripts/setup --s3-clients" >&2; exit 1; }

"$bin/cairn" devnet --nodes 8 --dir "$dir/net" >"$dir/devnet.log" 2>&1 &
devnet=$!
trap 'kill -INT $devnet 2>/dev/null; wait $devnet 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 60); do
  grep -q access_key "$dir/net/devnet.json" 2>/dev/null && break
  sleep 1
done
field() { python3 -c "import json,sys; d=json.load(open('$dir/net/devnet.json')); print($1)"; }
export AWS_ACCESS_KEY_ID="$(field "d['gateway']['access_key']")"
export AWS_SECRET_ACCESS_KEY="$(field "d['gateway']['secret_key']")"
export AWS_DEFAULT_REGION=us-east-1
s3() { aws --endpoint-url "$(field "d['gateway']['endpoint']")" s3 "$@"; }
timed() {
  local label="$1" start end
  shift
  start=$EPOCHREALTIME
  "$@"
  end=$EPOCHREALTIME
  awk -v l="$label" -v s="$start" -v e="$end" 'BEGIN { printf "%-32s %6.2f s\n", l, e - s }'
}

head -c 256M /dev/urandom >"$data"
s3 mb s3://bench >/dev/null
timed "healthy" s3 cp "$data" s3://bench/healthy-1 --quiet
timed "healthy" s3 cp "$data" s3://bench/healthy-2 --quiet
victim="$(field "d['nodes'][3]['pid']")"
(sleep 1.5 && kill -9 "$victim") &
timed "node 3 killed 1.5 s in" s3 cp "$data" s3://bench/killed --quiet
wait $!
timed "right after" s3 cp "$data" s3://bench/after --quiet
for key in healthy-1 killed after; do
  s3 cp "s3://bench/$key" - | cmp - "$data" >/dev/null && echo "$key reads back equal"
done
echo "gateway 'upload problem' lines: $(grep -c 'upload problem' "$dir/net/gateway/gateway.log" || true)"
