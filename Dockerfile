# syntax=docker/dockerfile:1
#
# The Abacus container image.
#
#   docker build -t abacus .                       # compile in the builder stage (default target)
#   cargo build --profile dist --locked --bin abacus
#   docker build --target prebuilt -t abacus .     # copy target/dist/abacus instead of compiling
#
# The image runs as uid 65532 with no shell, works on a read-only root filesystem with every
# capability dropped, listens on 0.0.0.0:1453 and answers its own health check
# (`abacus healthcheck`). See "Container image" in README.md.

# The Rust toolchain image for the builder stage: Debian 12, the glibc the runtime image has.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
# The runtime base: glibc and libgcc, no shell, a `nonroot` user 65532. Tests pass a local base.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---- builder: dependencies first (cached while only src/ changes), then Abacus itself --------
FROM ${RUST_IMAGE} AS builder
WORKDIR /build
COPY Cargo.toml Cargo.lock ./
# Stand-in targets so that `cargo build` compiles every dependency in a layer of its own.
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && cargo build --profile dist --locked --bin abacus \
    && rm -rf src benches
COPY src ./src
COPY benches ./benches
# COPY keeps the files' times, which may be older than the stand-ins': touch so cargo rebuilds.
RUN touch src/main.rs src/lib.rs \
    && cargo build --profile dist --locked --bin abacus \
    && cp target/dist/abacus /abacus

# ---- base: what every runnable stage shares -----------------------------------------------------
FROM ${RUNTIME_IMAGE} AS base
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/abacus-mcp/abacus
LABEL org.opencontainers.image.title="abacus" \
      org.opencontainers.image.description="A Kubernetes-native MCP calculator server with per-session history" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# Listen on every interface (the binary's own default is loopback), log JSON without colour.
ENV HOST=0.0.0.0 \
    PORT=1453 \
    LOG_FORMAT=json \
    NO_COLOR=1
USER 65532:65532
EXPOSE 1453
# For Docker and podman; Kubernetes uses its own HTTP probes on /health/live and /health/ready.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/abacus", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/abacus"]

# ---- prebuilt: a binary built outside the image (glibc 2.36 or older, e.g. on Debian 12) --------
FROM base AS prebuilt
ARG BINARY=target/dist/abacus
COPY ${BINARY} /usr/local/bin/abacus

# ---- runtime (default target): the binary from the builder stage ----------------------------------
FROM base AS runtime
COPY --from=builder /abacus /usr/local/bin/abacus
