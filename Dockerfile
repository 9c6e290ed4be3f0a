# The single loadlab image: `loadlab controller` in the chart's Deployment, and the agent and
# generator pods the controller creates (`loadlab agent serve`, `loadlab loadgen serve`).
#   docker build -t loadlab/loadlab:0.1.0 .
FROM rust:1-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p loadlab \
 && install -m 0755 target/release/loadlab /usr/local/bin/loadlab

FROM debian:bookworm-slim
# nginx is the target the agent starts for every run; bpftrace and perf collect lock contention
# and CPU profiles on the node. bpftrace's clang needs the kernel's UAPI headers
# (linux-libc-dev), which its package does not pull in.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends nginx-light bpftrace linux-libc-dev linux-perf ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/loadlab /usr/local/bin/loadlab
ENTRYPOINT ["/usr/local/bin/loadlab"]
