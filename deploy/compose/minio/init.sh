#!/bin/sh
# minio-init (docker-compose.yml): the bucket, hubgate's own user, and a policy that reaches that bucket
# only (policy.json, BUCKET replaced). Safe to run again: every step leaves an existing result as it is.
# Secrets arrive as environment variables and are only ever expanded inside double quotes.
set -eu
: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${HUBGATE_S3_ACCESS_KEY_ID:?}" "${HUBGATE_S3_SECRET_ACCESS_KEY:?}"
: "${BUCKET:=hubgate}" "${MINIO_URL:=http://minio:9000}"
case "$BUCKET" in *[!a-z0-9.-]*) echo "minio-init: bad bucket name $BUCKET" >&2; exit 2 ;; esac
policy="hubgate-$BUCKET"
here="$(dirname "$0")"
tmp="${TMPDIR:-/tmp}/hubgate-policy.$$.json"
trap 'rm -f "$tmp"' EXIT

mc alias set local "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "local/$BUCKET"
sed "s/BUCKET/$BUCKET/g" "$here/policy.json" > "$tmp"
mc admin policy create local "$policy" "$tmp"
mc admin user add local "$HUBGATE_S3_ACCESS_KEY_ID" "$HUBGATE_S3_SECRET_ACCESS_KEY"
# attach fails when the policy is attached already: then check that it is
if ! mc admin policy attach local "$policy" --user "$HUBGATE_S3_ACCESS_KEY_ID" 2>/dev/null; then
  mc admin user info local "$HUBGATE_S3_ACCESS_KEY_ID" | grep -q "$policy"
fi
echo "minio-init: bucket $BUCKET, user $HUBGATE_S3_ACCESS_KEY_ID with policy $policy"
