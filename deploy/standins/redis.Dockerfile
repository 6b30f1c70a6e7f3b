# A LOCAL stand-in for the redis image, from Debian's redis-server package (7.0 on bookworm): for builders that
# cannot pull from Docker Hub (docker-compose.offline.yml). Same command line, /data volume and redis-cli as the
# official image's; not the official image.
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008 the stand-in takes what the Debian release has: redis-server is 7.0 throughout bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
WORKDIR /data
VOLUME /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
