# Builds the package (session-load, session-cache) with libhiredis-dev and runs a load worker.
# Two bases, both built with Swift 6.2 (the package's minimum):
#   docker build .                                   Debian 12 bookworm, hiredis 0.14 (the default)
#   docker build --build-arg DISTRO=noble --build-arg RUNTIME=ubuntu:24.04 \
#     --build-arg HIREDIS=libhiredis1.1.0 .          Ubuntu 24.04 noble, hiredis 1.2
ARG DISTRO=bookworm
ARG RUNTIME=debian:bookworm-slim
ARG HIREDIS=libhiredis0.14
FROM swift:6.2-${DISTRO} AS build
RUN apt-get update && apt-get install -y --no-install-recommends libhiredis-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
# The manifest names every target: the tools, benchmarks and examples must be there too.
COPY Plugins ./Plugins
COPY Tools ./Tools
COPY Benchmarks ./Benchmarks
COPY Examples ./Examples
RUN swift build -c release --product session-load && swift build -c release --product session-cache

FROM ${RUNTIME}
ARG HIREDIS
RUN apt-get update && apt-get install -y --no-install-recommends ${HIREDIS} redis-tools ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/lib/swift/linux/*.so* /usr/lib/swift/linux/
COPY --from=build /src/.build/release/session-load /src/.build/release/session-cache /usr/local/bin/
ENV LD_LIBRARY_PATH=/usr/lib/swift/linux
ENTRYPOINT ["session-load"]
