# nodedns image: a static binary on a distroless base.
#
#   docker build -t nodedns .
#
# The build stage uses the Go toolchain the Makefile builds with (go1.27.3);
# the binary is static (CGO_ENABLED=0), so the final image needs no libc.
FROM golang:1.27.3 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/nodedns ./cmd/nodedns

# distroless/static: no shell, no package manager, nothing to patch but the
# binary. The numeric user lets Kubernetes verify runAsNonRoot. Binding port
# 53 as this user needs NET_BIND_SERVICE, granted by whoever runs the image;
# nodedns itself creates no address or rule (yet).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/nodedns /nodedns
USER 65532:65532
EXPOSE 53/udp 53/tcp 9253/tcp
ENTRYPOINT ["/nodedns"]
