# The fleet's image: the slim `gantry` binary (no demo, no mock providers, no test harness)
# on Debian 12 with the FFmpeg 5.1 libraries it links. Build: docker build -t gantry .
FROM debian:12 AS build
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ca-certificates curl build-essential pkg-config clang libclang-dev protobuf-compiler libprotobuf-dev \
      libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev libswscale-dev libswresample-dev \
 && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
WORKDIR /src
COPY . .
RUN . /root/.cargo/env && cargo build --release --locked --no-default-features --bin gantry

FROM debian:12-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ca-certificates libavcodec59 libavformat59 libavutil57 libavfilter8 libavdevice59 libswscale6 libswresample4 \
 && rm -rf /var/lib/apt/lists/* && useradd --uid 10001 --no-create-home gantry
COPY --from=build /src/target/release/gantry /usr/local/bin/gantry
USER 10001
ENTRYPOINT ["/usr/local/bin/gantry"]
