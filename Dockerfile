# nodedns container image: the static binary alone, FROM scratch.
#
#   docker build --build-arg VERSION=$(git describe --always --dirty) \
#     --build-arg REVISION=$(git rev-parse HEAD) -t nodedns .
#
# `make image` builds this file's final stage offline with buildah, the
# "build" stage replaced by the same binary built on the host with the same
# flags (image/build.sh), into bin/nodedns-image.oci.tar, reproducibly.
FROM golang:1.27.3 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static (no libc in the image), and the same bytes wherever it is built:
# no paths, no VCS stamp, an empty build ID. Keep in step with image/build.sh.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -buildid= -X main.version=${VERSION}" \
      -o /out/nodedns ./cmd/nodedns

# Nothing but the binary: no shell, no libc, no passwd file (the user is
# numeric), no CA bundle (nodedns talks TLS only to the Kubernetes API,
# whose CA comes with the service account), no iptables program (with
# rules_backend auto, nodedns writes the rules through nftables' netlink
# interface when the image has no iptables command).
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.title="nodedns" \
      org.opencontainers.image.description="Node-local caching DNS resolver for Kubernetes" \
      org.opencontainers.image.source="https://github.com/nodedns/nodedns" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=build /out/nodedns /nodedns
# Root, as the DaemonSet runs it (deploy/base/daemonset.yaml): every
# capability dropped but NET_ADMIN (the node-local address and the
# conntrack rules) and NET_BIND_SERVICE (port 53), no privilege escalation,
# a read-only root filesystem. A non-root user would get neither
# capability from Kubernetes (no ambient capabilities; file capabilities
# are ignored under no_new_privs) and could not write the root-owned
# hostPath of the cache snapshot. The user is numeric, so runAsNonRoot
# checks and runAsUser overrides work without a passwd file.
USER 0:0
# DNS on 53 (the DaemonSet's config listens on 169.254.20.10:53) and
# /metrics, /health and /ready on 9253. The binary's own defaults are
# loopback (127.0.0.1:5353 and :9253): pass --config or --listen and
# --http-listen.
EXPOSE 53/udp 53/tcp 9253/tcp
ENTRYPOINT ["/nodedns"]
