# One image with the three vx11 binaries; each Deployment picks its command.
#   docker build -t vx11:0.1.0 .    (or: make image)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      --bin vx11-controller --bin vx11-gateway --bin vx11-operator-backend \
 && mkdir /out \
 && cp target/release/vx11-controller target/release/vx11-gateway target/release/vx11-operator-backend /out/

# distroless: no shell, no package manager; glibc and libgcc for Rust binaries.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 8000 8011 9090
ENTRYPOINT ["/usr/local/bin/vx11-gateway"]
