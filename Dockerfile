# Multi-stage build of the single attestd binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin attestd

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/attestd /usr/local/bin/attestd
WORKDIR /app
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["attestd"]
CMD ["serve"]
