# Builds the package (session-load, session-cache) with libhiredis-dev and runs a load worker.
FROM swift:6.2-bookworm AS build
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

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libhiredis0.14 redis-tools ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/lib/swift/linux/*.so* /usr/lib/swift/linux/
COPY --from=build /src/.build/release/session-load /src/.build/release/session-cache /usr/local/bin/
ENV LD_LIBRARY_PATH=/usr/lib/swift/linux
ENTRYPOINT ["session-load"]
