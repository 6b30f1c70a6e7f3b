# A LOCAL stand-in for the prom/prometheus image, from Debian's prometheus package (2.42 on bookworm): for builders
# that cannot pull from Docker Hub (docker-compose.offline.yml). Same entrypoint, /prometheus volume, user and wget
# for the healthcheck as the official image's; not the official image (an older Prometheus).
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
# Not pinned by version: the stand-in takes what the Debian release has (prometheus is 2.42 throughout bookworm).
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus /etc/prometheus/rules && chown nobody:nogroup /prometheus
WORKDIR /prometheus
VOLUME /prometheus
USER nobody
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
