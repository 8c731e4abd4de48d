# clerk-sync: multi-stage build, non-root runtime.
#   docker build -t clerk-sync .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY config ./config
RUN cargo build --release --locked --bin clerk-sync

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/clerk-sync --create-home clerk-sync
COPY --from=build /src/target/release/clerk-sync /usr/local/bin/clerk-sync
USER clerk-sync
WORKDIR /var/lib/clerk-sync
ENV CLERK_SYNC_LISTEN=0.0.0.0:3000 \
    CLERK_SYNC_METRICS_LISTEN=0.0.0.0:9464
EXPOSE 3000 9464
ENTRYPOINT ["/usr/local/bin/clerk-sync"]
CMD ["serve"]
