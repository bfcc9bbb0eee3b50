#!/usr/bin/env bash
# Vendors Swagger UI (npm package swagger-ui-dist) into docs/vendor/swagger-ui/,
# the renderer of docs/api.html. Needs the npm registry; run it only to change
# the version. Building, testing and serving the docs never need the network:
# the files are committed, and tests/docs/check_docs.lua checks them against
# docs/vendor/swagger-ui/SOURCE (written here).
#   scripts/vendor-swagger-ui.sh [VERSION]
set -euo pipefail

version="${1:-5.35.0}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/docs/vendor/swagger-ui"
files=(swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# npm pack checks the tarball against the registry's integrity field.
(cd "$work" && npm pack --silent "swagger-ui-dist@$version" >/dev/null)
tar -xzf "$work/swagger-ui-dist-$version.tgz" -C "$work"
integrity="$(npm view "swagger-ui-dist@$version" dist.integrity)"

rm -rf "$dest"
mkdir -p "$dest"
for f in "${files[@]}"; do
  cp "$work/package/$f" "$dest/$f"
done
{
  echo "package swagger-ui-dist"
  echo "version $version"
  echo "integrity $integrity"
  (cd "$dest" && sha256sum "${files[@]}" | sed 's/^/sha256 /')
} >"$dest/SOURCE"
echo "vendored swagger-ui-dist@$version into docs/vendor/swagger-ui"
