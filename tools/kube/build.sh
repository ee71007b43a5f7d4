#!/usr/bin/env bash
# Build the Kubernetes control plane of the integration tests
# (internal/kubetest): kube-apiserver and kubectl v1.37.2 from the
# k8s.io/kubernetes module, and etcd v3.7.0 from its server module, all
# pinned by this directory's go.mod and go.sum. Print the directory that
# holds the three binaries. The build is skipped when they exist (delete
# the directory, or set FORCE=1, to rebuild).
#
#   dir=$(tools/kube/build.sh)
#
# A cold build takes about 11 minutes on two cores (kube-apiserver is most
# of it; measured: 10 min 42 s, 1,250 CPU-seconds), downloads about 0.6 GB
# of modules and adds 3 GB to the Go build cache; with that cache kept,
# seconds for all three.
set -euo pipefail

KUBE_VERSION=v1.37.2
ETCD_RELEASE=v3.7.0 # not ETCD_*: etcd reads such variables as flags
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out_dir="${XDG_CACHE_HOME:-$HOME/.cache}/nodedns/kube-${KUBE_VERSION}-etcd-${ETCD_RELEASE}"
bins=(kube-apiserver kubectl etcd)

# The versions above must match the ones pinned in go.mod.
for pin in "k8s.io/kubernetes ${KUBE_VERSION}" "go.etcd.io/etcd/server/v3 ${ETCD_RELEASE}"; do
	if ! grep -q "^[[:space:]]*${pin}\$" "${here}/go.mod"; then
		echo "build.sh: go.mod does not pin ${pin}" >&2
		exit 1
	fi
done

have=1
for b in "${bins[@]}"; do
	[[ -x "${out_dir}/${b}" ]] || have=0
done
if [[ "${have}" == 1 && "${FORCE:-0}" != 1 ]]; then
	echo "${out_dir}"
	exit 0
fi

mkdir -p "${out_dir}"
tmp=$(mktemp -d "${out_dir}/.build.XXXXXX")
trap 'rm -rf "${tmp}"' EXIT

# Version stamps, so that /version and `kubectl version` tell the truth
# (without them both say v0.0.0-master). Only what is known is stamped: no
# commit, no tree state.
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
done

echo "build.sh: Kubernetes ${KUBE_VERSION} and etcd ${ETCD_RELEASE} into ${out_dir}; a cold build takes about 11 minutes on two cores" >&2
# One go build for the three: each package is compiled once, and one
# binary links while the others' packages compile. etcd's main package is
# go.etcd.io/etcd/server/v3, which go build names "server".
(cd "${here}" && CGO_ENABLED=0 go build -trimpath -mod=readonly -ldflags="${ldflags}" -o "${tmp}/" \
	k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3)
mv "${tmp}/server" "${tmp}/etcd"
for b in "${bins[@]}"; do
	mv -f "${tmp}/${b}" "${out_dir}/${b}"
done
echo "${out_dir}"
