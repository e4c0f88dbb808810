# chunkmill: one image holding the three daemons (fetcher, mapper, saver)
# and the `chunkmill` CLI that submits and steers the fetcher's jobs.
#
#   docker build -t chunkmill:latest .        (or: scripts/image)
#   docker run --rm chunkmill:latest mapper --help
#   docker run --rm chunkmill:latest chunkmill --help
#
# Pick the program with the command: `fetcher`, `mapper`, `saver` or
# `chunkmill`; configure it with CHUNKMILL_* environment variables (see
# `<program> --help`).
# Health checks need no shell or curl: `<daemon> --probe /readyz` GETs the
# daemon's own endpoint on --http and exits 0 on 200, 1 otherwise.
#
# DEBIAN_IMAGE lets a machine without a registry use a locally made base
# (scripts/image imports one with debootstrap).
ARG DEBIAN_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- build ----
FROM ${DEBIAN_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates cmake make gcc libc6-dev pkg-config \
      libnats-dev libuv1-dev libprotobuf-c-dev protobuf-c-compiler \
      libsqlite3-dev libcjson-dev libhttp-parser-dev libcurl4-openssl-dev \
      libssl-dev libcmocka-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# CM_BUILD_TESTS=ON also runs the unit tests (ctest) inside the build.
ARG CM_BUILD_TESTS=OFF
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr/local \
      -DCM_BUILD_TESTS=${CM_BUILD_TESTS} \
 && cmake --build /build -j"$(nproc)" \
 && if [ "${CM_BUILD_TESTS}" = ON ]; then ctest --test-dir /build --output-on-failure; fi \
 && DESTDIR=/out cmake --install /build --strip \
 && for d in fetcher mapper saver; do \
      test -x /out/usr/local/bin/$d || install -D -m 0755 /build/$d/$d /out/usr/local/bin/$d; \
    done \
 && test -x /out/usr/local/bin/chunkmill \
 && /out/usr/local/bin/fetcher --help >/dev/null \
 && /out/usr/local/bin/mapper --help >/dev/null \
 && /out/usr/local/bin/saver --help >/dev/null \
 && /out/usr/local/bin/chunkmill --help >/dev/null

# -------------------------------------------------------------- runtime ----
FROM ${DEBIAN_IMAGE} AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libnats3.4 libuv1 libprotobuf-c1 libsqlite3-0 libcjson1 \
      libhttp-parser2.9 libcurl4 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 chunkmill \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/chunkmill \
      --shell /usr/sbin/nologin chunkmill \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/chunkmill
COPY --from=build /out/usr/local/bin/ /usr/local/bin/
# Fail the build now, not at deploy time, if a runtime library is missing.
RUN for d in fetcher mapper saver chunkmill; do \
      if ldd /usr/local/bin/$d | grep 'not found'; then echo "missing libraries for $d" >&2; exit 1; fi; \
    done
ARG VERSION=dev
LABEL org.opencontainers.image.title="chunkmill" \
      org.opencontainers.image.description="fetch -> map -> save pipeline on NATS: fetcher, mapper, saver, chunkmill CLI" \
      org.opencontainers.image.version="${VERSION}"
ENV CHUNKMILL_VERSION_LABEL=${VERSION}
# Numeric user so Kubernetes runAsNonRoot can verify it without a passwd lookup.
USER 10001:10001
WORKDIR /var/lib/chunkmill
# --http default: /healthz /readyz /metrics /status
EXPOSE 8080
STOPSIGNAL SIGTERM
CMD ["mapper", "--help"]
