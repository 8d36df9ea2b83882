# The manager image: a Rust builder stage, then a slim runtime stage.
# Machines that cannot pull images use docker-compose.offline.yml instead,
# which builds the same image from the base image and a host-built binary.
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY images images
RUN cargo build --release --locked --bin ol

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /src/target/release/ol /usr/local/bin/ol
ENV OL_LISTEN=0.0.0.0:8080 OL_FUNCTIONS_LISTEN=0.0.0.0:8081 OL_DATA_DIR=/var/lib/openlambda
EXPOSE 8080 8081
HEALTHCHECK --interval=5s --timeout=3s --retries=30 CMD ["ol", "health"]
ENTRYPOINT ["ol"]
CMD ["serve"]
