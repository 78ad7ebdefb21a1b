# syntax=docker/dockerfile:1
# The webhook image that deploy/base/deployment.yaml runs (spark-admission:0.1.0):
#
#   docker build -t spark-admission:0.1.0 .
#
# Build stage: a Rust toolchain recent enough for kube 5.0 (needs 1.89). The cache mounts
# keep the registry and the target folder between builds (BuildKit).
FROM rust:1.91-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin spark-admission \
 && cp target/release/spark-admission /spark-admission

# Runtime: distroless (glibc, CA certificates, no shell, no package manager), as the
# unprivileged "nonroot" user 65532, which the Deployment's securityContext expects.
# The binary writes nothing: certificates come from the mounted Secret
# (--generate-certs=false) and logs go to stdout, so the root filesystem is read-only.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /spark-admission /usr/local/bin/spark-admission
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/spark-admission"]
CMD ["serve"]
