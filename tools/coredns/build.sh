#!/usr/bin/env bash
# Build the trimmed CoreDNS used by the nodedns benchmark suite and print the
# path of the binary. The build is skipped when the binary already exists
# (delete it, or set FORCE=1, to rebuild).
#
#   bin=$(tools/coredns/build.sh)
set -euo pipefail

COREDNS_VERSION=v1.15.0
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# "-k8s": with the kubernetes plugin, which older cached builds lack.
out_dir="${XDG_CACHE_HOME:-$HOME/.cache}/nodedns/coredns-${COREDNS_VERSION}-k8s"
bin="${out_dir}/coredns"

# The version above must match the one pinned in go.mod.
if ! grep -q "github.com/coredns/coredns ${COREDNS_VERSION}\$" "${here}/go.mod"; then
	echo "build.sh: go.mod does not pin github.com/coredns/coredns ${COREDNS_VERSION}" >&2
	exit 1
fi

if [[ -x "${bin}" && "${FORCE:-0}" != 1 ]]; then
	echo "${bin}"
	exit 0
fi

mkdir -p "${out_dir}"
tmp="${bin}.tmp.$$"
trap 'rm -f "${tmp}"' EXIT
echo "build.sh: building CoreDNS ${COREDNS_VERSION} into ${bin} (takes a few minutes)" >&2
(
	cd "${here}"
	CGO_ENABLED=0 go build -trimpath -mod=readonly -ldflags="-s -w" -o "${tmp}" .
)
mv -f "${tmp}" "${bin}"
trap - EXIT
echo "${bin}"
