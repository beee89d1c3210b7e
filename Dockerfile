# The eventbus binary in a small Debian image, run as an unprivileged user.
#   docker build -t eventbus .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p eventbus-server --bin eventbus \
    && cp target/release/eventbus /eventbus

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home eventbus
COPY --from=build /eventbus /usr/local/bin/eventbus
COPY deploy/eventbus-with-secrets.sh /usr/local/bin/eventbus-with-secrets
USER eventbus
EXPOSE 8080
ENV EVENT_BUS_LOG_FORMAT=json
ENTRYPOINT ["eventbus"]
CMD ["serve"]
