# Builds the tern binary and runs it. The UI, once present in web/, is built
# by the cargo build itself, so the builder image carries Node as well.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev pkg-config nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tern \
 && cp target/release/tern /usr/local/bin/tern

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/tern --create-home tern
COPY --from=build /usr/local/bin/tern /usr/local/bin/tern
USER tern
WORKDIR /var/lib/tern
VOLUME /var/lib/tern/data
# API/UI, OTLP gRPC, OTLP HTTP
EXPOSE 3000 4317 4318
ENV TERN_DATA_DIR=/var/lib/tern/data \
    TERN_SERVER__HTTP_ADDR=0.0.0.0:3000 \
    TERN_SERVER__OTLP_GRPC_ADDR=0.0.0.0:4317 \
    TERN_SERVER__OTLP_HTTP_ADDR=0.0.0.0:4318
HEALTHCHECK --interval=10s --timeout=3s CMD ["/bin/sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/3000"]
ENTRYPOINT ["tern"]
CMD ["serve"]
