#!/usr/bin/env bash
# Runs govulncheck on the module against a vulnerability database built
# offline: the Go vulnerability database's reports come as a Go module
# (golang.org/x/vulndb, through the module proxy like any other), and
# tools/vulncheck/indexdb turns them into the database govulncheck reads,
# in a few seconds. The database is built once per version into the
# user's cache.
#
#   tools/vulncheck/run.sh [packages]   (default ./...)
set -euo pipefail

GOVULNCHECK=golang.org/x/vuln/cmd/govulncheck@v1.9.0
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018
db="${XDG_CACHE_HOME:-$HOME/.cache}/nodedns/vulndb-${VULNDB_VERSION}"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [[ ! -f "${db}/index/db.json" ]]; then
	echo "vulncheck: building the vulnerability database ${VULNDB_VERSION} into ${db} (once)" >&2
	src=$(go mod download -json "golang.org/x/vulndb@${VULNDB_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	if [[ -z "${src}" || ! -d "${src}/data/osv" ]]; then
		echo "vulncheck: could not download golang.org/x/vulndb@${VULNDB_VERSION}" >&2
		exit 1
	fi
	tmp="${db}.tmp.$$"
	trap 'rm -rf "${tmp}"' EXIT
	(cd "${here}/../.." && go run ./tools/vulncheck/indexdb -vulns "${src}/data/osv" -out "${tmp}")
	mv "${tmp}" "${db}"
fi
cd "$(dirname "$0")/../.."
exec go run "${GOVULNCHECK}" -db "file://${db}" "${@:-./...}"
