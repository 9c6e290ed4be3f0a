# The single loadlab image: `loadlab controller` in the chart's Deployment, and the agent and
# generator pods the controller creates (`loadlab agent serve`, `loadlab loadgen serve`).
#   docker build -t loadlab/loadlab:0.1.0 .
FROM rust:1-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends protobuf-compiler clang libelf-dev zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p loadlab \
 && install -m 0755 target/release/loadlab /usr/local/bin/loadlab

FROM debian:bookworm-slim
# nginx is the target the agent starts for every run. Lock contention and CPU profiles need no
# tool: their BPF programs are compiled into loadlab (libelf links them).
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends nginx-light libelf1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/loadlab /usr/local/bin/loadlab
ENTRYPOINT ["/usr/local/bin/loadlab"]
