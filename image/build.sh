#!/usr/bin/env bash
# Builds the nodedns container image offline and reproducibly, into an OCI
# archive (default bin/nodedns-image.oci.tar), with Debian's buildah: no
# container engine, no registry, no base image to pull.
#
#   image/build.sh [OUT]
#
# 1. The static binary, built here with the Dockerfile's flags (CGO off,
#    -trimpath, no VCS stamp, an empty build ID, stripped).
# 2. The Dockerfile's final stage (FROM scratch: the binary, the user, the
#    labels, the ports, the entrypoint), built by buildah with its "build"
#    stage replaced by that binary (--build-context build=...), so the Go
#    image that stage names is never pulled. vfs storage and chroot
#    isolation in a temporary directory next to OUT, removed at the end.
# 3. Every timestamp is SOURCE_DATE_EPOCH (default: the last commit's time):
#    the image config, its history, the files in the layer, the archive.
#
# Same source, VERSION and SOURCE_DATE_EPOCH: the same image digest, and
# the same archive byte for byte (test/image/image_test.go builds twice and
# compares). Prints the archive, its image name and its manifest digest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$root/bin/nodedns-image.oci.tar}")
cd "$root"
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3}
GO=${GO:-go}
for c in buildah tar; do
	command -v "$c" >/dev/null || { echo "image/build.sh: $c is missing (Debian: apt-get install $c)" >&2; exit 1; }
done

version=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}
revision=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
name="nodedns:$version"

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$(dirname "$out")/.nodedns-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/build/out" "$work/context"

# Keep in step with the Dockerfile's build stage.
CGO_ENABLED=0 "$GO" build -trimpath -buildvcs=false \
	-ldflags "-s -w -buildid= -X main.version=$version" \
	-o "$work/build/out/nodedns" ./cmd/nodedns

buildah=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
# The context is empty: the final stage copies only from the build stage.
"${buildah[@]}" build --quiet --isolation chroot --pull=never --identity-label=false \
	--timestamp "$epoch" --build-context "build=$work/build" \
	--build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "CREATED=$created" \
	-f Dockerfile -t "localhost/$name" "$work/context" >/dev/null
"${buildah[@]}" push --quiet "localhost/$name" "oci:$work/layout:$name"

# buildah's own archive carries the time of writing: tar the OCI layout
# with fixed times, owners, modes and order instead.
(cd "$work/layout" && tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
	--mode='u=rwX,go=rX' --format=gnu -cf "$work/image.tar" oci-layout index.json blobs)
mv "$work/image.tar" "$out"
digest=$(sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p' "$work/layout/index.json")
echo "$out: $name, manifest $digest, $(stat -c %s "$out") bytes"
