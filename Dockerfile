# The hub as a container image. Build: docker build -t labhub .
# (Needs a registry for the two base images; on a machine without one, run the binary directly.)
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p labhub

FROM debian:bookworm-slim
# docker.io: the CLI that image recipes call (docker import); mmdebstrap: builds recipe images;
# iptables: keeps users' servers from reaching the host; nftables: keeps Swarm tasks apart
# on the overlay; postgresql: the embedded database
# when DATABASE_URL is unset.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates docker.io mmdebstrap iptables nftables postgresql \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/labhub /usr/local/bin/labhub
ENV LABHUB_DATA_DIR=/var/lib/labhub \
    LABHUB_BIND=0.0.0.0:8000
VOLUME /var/lib/labhub
EXPOSE 8000
ENTRYPOINT ["labhub"]
CMD ["serve"]
