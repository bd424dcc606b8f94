# syntax=docker/dockerfile:1
# mosnlite container image: a static binary on distroless, running as a numeric non-root user.
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg COMMIT=$(git rev-parse --short HEAD) -t mosnlite .      (or: make docker)
# The bundled configs/mosnlite.json listens on 127.0.0.1; mount your own config over
# /etc/mosnlite/mosnlite.json (listening on 0.0.0.0) to serve from outside the container.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/mosnlite ./cmd/mosnlite

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mosnlite /mosnlite
COPY configs/mosnlite.json /etc/mosnlite/mosnlite.json
USER 65532:65532
EXPOSE 2045 34901
ENTRYPOINT ["/mosnlite"]
CMD ["start", "-c", "/etc/mosnlite/mosnlite.json"]
