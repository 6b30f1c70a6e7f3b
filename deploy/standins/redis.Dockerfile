# A LOCAL stand-in for the redis image, from Debian's redis-server package (7.0 on bookworm): for builders that
# cannot pull from Docker Hub (docker-compose.offline.yml). Same command line, /data volume and redis-cli as the
# official image's; not the official image.
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
# Not pinned by version: the stand-in takes what the Debian release has (redis-server is 7.0 throughout bookworm).
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data \
    && printf '%s\n' '#!/bin/sh' \
       '# As the official image: redis-server started without a config file gets --protected-mode no (else it' \
       '# refuses every client but the loopback, and compose reaches it over the project network).' \
       'if [ "$1" = redis-server ]; then shift; exec redis-server --protected-mode no "$@"; fi' \
       'exec "$@"' > /usr/local/bin/redis-entrypoint \
    && chmod 0755 /usr/local/bin/redis-entrypoint
WORKDIR /data
VOLUME /data
USER redis
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/redis-entrypoint"]
CMD ["redis-server"]
