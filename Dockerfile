# nodedns image: a static binary on a distroless base.
#
#   docker build -t nodedns .
#
# The build stage pins the Go toolchain the module asks for; the binary is
# static (CGO_ENABLED=0), so the final image needs no libc.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/nodedns ./cmd/nodedns

# distroless/static: no shell, no package manager, nothing to patch but the
# binary. The numeric user lets Kubernetes verify runAsNonRoot. Binding port
# 53 and adding the node-local address need NET_BIND_SERVICE and NET_ADMIN,
# which the DaemonSet grants to this user; nothing else is needed.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/nodedns /nodedns
USER 65532:65532
EXPOSE 53/udp 53/tcp 9253/tcp
ENTRYPOINT ["/nodedns"]
