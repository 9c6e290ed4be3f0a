//! One clap struct per command; every flag can also come from a `LOADLAB_*` variable.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use loadlab_engine::spec::WrittenDuration;

#[derive(Debug, Parser)]
#[command(
    name = "loadlab",
    version,
    about = "Measure how a kernel change changes a connection-heavy server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing syntax, e.g. `info` or `loadlab_agent=debug`); LOADLAB_LOG overrides.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an experiment file on this machine and report the comparison.
    Run(RunArgs),
    /// Find the first kernel of an ordered list where a behaviour holds (`kind: Bisection`),
    /// by binary search, each step an experiment on one kernel in a virtual machine.
    Bisect(BisectArgs),
    /// Storm one URL with new connections (like wrk with `Connection: close`).
    Storm(StormArgs),
    /// Node agent: describe this node, or serve the agent over gRPC.
    Agent(AgentArgs),
    /// Load generator served over gRPC.
    Loadgen(LoadgenArgs),
    /// Serve the REST API over the results database.
    Serve(ServeArgs),
    /// Print the comparison report of a stored experiment.
    Compare(CompareArgs),
    /// Write a cohort's CPU flamegraph (or a differential one against another cohort) as SVG.
    Flamegraph(FlamegraphArgs),
    /// The results database: print its URL (starting loadlab's private Postgres if needed).
    Db(DbArgs),
    /// Benchmarks that print loadlab's figures next to its peers', measured in the same run.
    Bench(BenchArgs),
    /// Print the Experiment CustomResourceDefinition (YAML), for `kubectl apply -f -`.
    Crd,
    /// Run in a cluster: reconcile Experiment resources and serve the REST API (what the Helm
    /// chart deploys).
    Controller(ControllerArgs),
}

/// `ControllerArgs::agent_perf_events`, as the chart spells it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AgentPerfEvents {
    #[value(name = "perfmon")]
    Perfmon,
    #[value(name = "sysAdmin")]
    SysAdmin,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Address of the REST API and /metrics.
    #[arg(long, env = "LOADLAB_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The loadlab image agent and generator pods run.
    #[arg(long, env = "LOADLAB_IMAGE")]
    pub image: String,
    /// imagePullPolicy of those pods (Always, IfNotPresent, Never); the cluster's default when
    /// absent.
    #[arg(long, env = "LOADLAB_IMAGE_PULL_POLICY")]
    pub image_pull_policy: Option<String>,
    /// The capability agent pods open perf events with: `perfmon` (CAP_PERFMON, enough where
    /// kernel.perf_event_paranoid is 2 or less) or `sysAdmin` (CAP_SYS_ADMIN too, which
    /// Debian's and Ubuntu's kernels require at their default 3 and 4).
    #[arg(
        long,
        env = "LOADLAB_AGENT_PERF_EVENTS",
        value_enum,
        default_value = "perfmon"
    )]
    pub agent_perf_events: AgentPerfEvents,
    /// Requests and limits of agent pods, as JSON (a Kubernetes ResourceRequirements).
    #[arg(long, env = "LOADLAB_AGENT_RESOURCES")]
    pub agent_resources: Option<String>,
    /// Requests and limits of generator pods, as JSON (a Kubernetes ResourceRequirements).
    #[arg(long, env = "LOADLAB_LOADGEN_RESOURCES")]
    pub loadgen_resources: Option<String>,
    /// The controller's own pod labels (`key=value,...`): each experiment then gets a
    /// NetworkPolicy that admits only pods with these labels in the controller's namespace
    /// (`--namespace`) to its agents and generators, and only its generators to its agents'
    /// nginx. Without it no NetworkPolicy is made.
    #[arg(long, env = "LOADLAB_NETWORK_POLICY_LABELS")]
    pub network_policy_labels: Option<String>,
    /// Namespaces experiments may run in, separated by commas, or `*` for every one: the
    /// controller makes pods, Secrets and NetworkPolicies only there (the chart grants a Role
    /// in each) and tells an experiment applied elsewhere why it waits.
    #[arg(long, env = "LOADLAB_EXPERIMENT_NAMESPACES", default_value = "*")]
    pub experiment_namespaces: String,
    /// Namespace of the leader lease: the controller's own.
    #[arg(long, env = "LOADLAB_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// This replica's name in the leader lease (its pod name).
    #[arg(long, env = "LOADLAB_IDENTITY")]
    pub identity: Option<String>,
    /// Seconds a leader lease lasts without renewal.
    #[arg(long, env = "LOADLAB_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,
    /// Bearer token for ingest over HTTP, as for `loadlab serve`.
    #[arg(long, env = "LOADLAB_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Token that reads of results need, as for `loadlab serve`.
    #[arg(long, env = "LOADLAB_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// How long to wait for the results database to accept connections at start (a database
    /// installed beside the controller may start after it), e.g. `2m`.
    #[arg(long, env = "LOADLAB_DATABASE_WAIT", default_value = "2m", value_parser = WrittenDuration::parse)]
    pub database_wait: WrittenDuration,
    /// Key every replica derives each experiment's pod token from (at least 32 characters;
    /// the chart keeps one in a Secret of its own).
    #[arg(long, env = "LOADLAB_TOKEN_KEY", hide_env_values = true)]
    pub token_key: String,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Many A/A experiments and some A/B ones with `repetitions: auto`: how often the stopping
    /// rule calls a change where there is none, and how many rounds a real one takes.
    Calibrate(BenchCalibrateArgs),
    /// loadlab's storm against wrk (`-H 'Connection: close'`) on one local nginx, alternating.
    Loadgen(BenchLoadgenArgs),
    /// Seeds a scratch database through ingest, then times the comparison and fleet endpoints.
    Api(BenchApiArgs),
    /// Times cluster planning (cohorts by kernel, generator placement) over a synthetic fleet.
    Plan(BenchPlanArgs),
    /// The same storm with the agent's capture on and off, alternating: the rate it costs.
    Agent(BenchAgentArgs),
    /// Placement at fleet scale on a real API server (simulated nodes from
    /// `scripts/cluster.sh kwok 1000`): apply to all pods created, controller CPU and memory,
    /// API requests per experiment.
    Cluster(BenchClusterArgs),
}

#[derive(Debug, Args)]
pub struct BenchClusterArgs {
    /// Experiments applied at once, each on one rack of the simulated fleet.
    #[arg(long, default_value_t = 4)]
    pub experiments: usize,
    /// The image the controller puts in its pods (simulated nodes never run it).
    #[arg(long, default_value = "loadlab/loadlab:0.1.0")]
    pub image: String,
    /// The controller's kubeconfig: a user whose requests the API server audits.
    #[arg(
        long,
        default_value = "/var/lib/loadlab-cluster/bench-controller.kubeconfig"
    )]
    pub controller_kubeconfig: PathBuf,
    /// The API server's audit log (scripts/cluster.sh writes one for that user alone).
    #[arg(long, default_value = "/var/lib/loadlab-cluster/logs/audit.log")]
    pub audit_log: PathBuf,
}

#[derive(Debug, Args)]
pub struct BenchAgentArgs {
    /// Rounds; each runs the storm once with the capture and once without, alternating which
    /// goes first.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Measured window of each run (after a 1 s warm-up).
    #[arg(short, long, default_value = "5s", value_parser = WrittenDuration::parse)]
    pub duration: WrittenDuration,
    #[arg(short, long, default_value_t = 64)]
    pub connections: u32,
    #[arg(long, default_value_t = 1)]
    pub nginx_workers: u32,
    /// Capture lock contention.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub lock_contention: bool,
    /// CPU profile frequency; 0 for none.
    #[arg(long, default_value_t = 499)]
    pub cpu_profile_hz: u32,
}

#[derive(Debug, Args)]
pub struct BenchCalibrateArgs {
    /// A/A experiments: the same nginx (one worker) as both cohorts.
    #[arg(long, default_value_t = 20)]
    pub same: u32,
    /// A/B experiments: two nginx workers against one.
    #[arg(long, default_value_t = 5)]
    pub different: u32,
    /// Measured window of each run.
    #[arg(short, long, default_value = "1s", value_parser = WrittenDuration::parse)]
    pub duration: WrittenDuration,
    #[arg(long, default_value = "300ms", value_parser = WrittenDuration::parse)]
    pub warmup: WrittenDuration,
    #[arg(short, long, default_value_t = 32)]
    pub connections: u32,
    /// The budget of each experiment, in rounds.
    #[arg(long, default_value_t = 12)]
    pub max_rounds: u32,
    /// The smallest change that matters, in percent.
    #[arg(long, default_value_t = 5.0)]
    pub practical_change_percent: f64,
}

#[derive(Debug, Args)]
pub struct BenchPlanArgs {
    /// Nodes in the synthetic fleet.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Timed plannings; the figures are their percentiles.
    #[arg(long, default_value_t = 200)]
    pub rounds: usize,
}

#[derive(Debug, Args)]
pub struct BenchApiArgs {
    #[arg(long, default_value_t = 200)]
    pub experiments: usize,
    /// Runs per experiment, half on each of two cohorts.
    #[arg(long, default_value_t = 50)]
    pub runs_per_experiment: usize,
    /// Distinct nodes (hardware and kernel) the runs spread over.
    #[arg(long, default_value_t = 50)]
    pub node_types: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Comparison requests (a quarter as many fleet requests).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
}

#[derive(Debug, Args)]
pub struct BenchLoadgenArgs {
    /// Rounds; each runs wrk and loadlab twice (connections made as wrk makes them, and lean),
    /// in an order that rotates from round to round.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Length of each tool's run.
    #[arg(short, long, default_value = "5s", value_parser = WrittenDuration::parse)]
    pub duration: WrittenDuration,
    /// Concurrent connections for both tools.
    #[arg(short, long, default_value_t = 64)]
    pub connections: u32,
    /// Threads for both tools; 0 means one per CPU.
    #[arg(short, long, default_value_t = 0)]
    pub threads: usize,
    /// nginx worker processes for the target.
    #[arg(long, default_value_t = 1)]
    pub nginx_workers: u32,
    /// How the lean loadlab's connections end (wrk's always end with a FIN); see `loadlab
    /// storm --close`.
    #[arg(long, value_enum, default_value = "reset")]
    pub close: CloseArg,
    /// How the lean loadlab's handshakes end (wrk's ACK is always separate); see `loadlab storm
    /// --handshake-ack`.
    #[arg(long, value_enum, default_value = "with-request")]
    pub handshake_ack: HandshakeAckArg,
    /// Concurrent connections held for the memory measurement (open loop, slow target).
    #[arg(long, default_value_t = 10_000)]
    pub memory_connections: u32,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Experiment file (YAML, `kind: Experiment`).
    pub file: PathBuf,
    /// Print the final report as JSON on stdout instead of a table.
    #[arg(long, env = "LOADLAB_JSON")]
    pub json: bool,
    /// Continue a stored experiment of this file that was interrupted: runs already stored
    /// as succeeded are not repeated.
    #[arg(long, value_name = "EXPERIMENT")]
    pub resume: Option<uuid::Uuid>,
    /// File whose first line is the bearer token the agent hosts and generators require
    /// (cohorts of `nodes`).
    #[arg(long, env = "LOADLAB_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Reach the agent hosts and generators over TLS, trusting this PEM CA certificate.
    #[arg(long, env = "LOADLAB_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BisectArgs {
    /// Bisection file (YAML, `kind: Bisection`).
    pub file: PathBuf,
    /// Print the bisection as JSON on stdout instead of a table.
    #[arg(long, env = "LOADLAB_JSON")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StormArgs {
    /// Target URL, such as http://127.0.0.1:8080/.
    pub url: String,
    /// Concurrent connections.
    #[arg(short, long, env = "LOADLAB_CONNECTIONS", default_value_t = 64)]
    pub connections: u32,
    /// Measured window (10s, 500ms, 2m).
    #[arg(short, long, env = "LOADLAB_DURATION", default_value = "10s", value_parser = WrittenDuration::parse)]
    pub duration: WrittenDuration,
    /// Warm-up before the measured window; its connections are counted apart.
    #[arg(short, long, env = "LOADLAB_WARMUP", default_value = "0s", value_parser = WrittenDuration::parse)]
    pub warmup: WrittenDuration,
    /// Open loop: start this many connections per second (latency then counts from each
    /// connection's scheduled start); --connections caps how many are in flight.
    #[arg(short, long, env = "LOADLAB_RATE")]
    pub rate: Option<f64>,
    /// Requests per connection: 1 is a connection storm, more is keep-alive.
    #[arg(long, env = "LOADLAB_REQUESTS_PER_CONNECTION", default_value_t = 1)]
    pub requests_per_connection: u32,
    /// HTTP method.
    #[arg(long, env = "LOADLAB_METHOD", default_value = "GET")]
    pub method: String,
    /// Extra request header, `Name: value`. Repeatable.
    #[arg(
        short = 'H',
        long = "header",
        env = "LOADLAB_HEADERS",
        value_delimiter = ','
    )]
    pub headers: Vec<String>,
    /// Host header, when it should differ from the URL's.
    #[arg(long, env = "LOADLAB_HOST")]
    pub host: Option<String>,
    /// Source addresses to connect from in turn (e.g. 127.0.0.2,127.0.0.3): more source ports.
    #[arg(long, env = "LOADLAB_SOURCE_ADDRS", value_delimiter = ',')]
    pub source_addrs: Vec<IpAddr>,
    /// Event-loop threads; 0 means one per CPU (of `--cpus` when given).
    #[arg(short, long, env = "LOADLAB_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Run the storm's threads on these CPUs only, as the kernel lists them (`0-3,6`): keep
    /// the generator off the server's CPUs on one machine.
    #[arg(long, env = "LOADLAB_CPUS", value_parser = cpu_list)]
    pub cpus: Option<CpuList>,
    /// How each connection ends: `fin` (orderly; the server keeps the TIME_WAIT, as with wrk
    /// and browsers) or `reset` (SO_LINGER 0: the server frees the socket at once; cheaper
    /// teardown than real clients cause, so compare kernels under one mode).
    #[arg(long, env = "LOADLAB_CLOSE", value_enum, default_value = "fin")]
    pub close: CloseArg,
    /// How each TCP handshake ends: `separate` (the SYN-ACK is acknowledged at once, as by wrk
    /// and browsers) or `with-request` (the ACK rides on the request: fewer segments per
    /// connection for both ends; nginx finds the request queued when it accepts, so compare
    /// kernels under one mode).
    #[arg(
        long,
        env = "LOADLAB_HANDSHAKE_ACK",
        value_enum,
        default_value = "separate"
    )]
    pub handshake_ack: HandshakeAckArg,
    /// Per-connection connect timeout.
    #[arg(long, env = "LOADLAB_CONNECT_TIMEOUT", default_value = "3s", value_parser = WrittenDuration::parse)]
    pub connect_timeout: WrittenDuration,
    /// Per-connection timeout for the whole exchange.
    #[arg(long, env = "LOADLAB_RESPONSE_TIMEOUT", default_value = "10s", value_parser = WrittenDuration::parse)]
    pub response_timeout: WrittenDuration,
    /// Print one JSON object instead of text.
    #[arg(long, env = "LOADLAB_JSON")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: AgentCommand,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Print this node's facts.
    Describe {
        /// Also report whether this kernel symbol exists (repeatable; comma-separated in the
        /// variable).
        #[arg(long = "symbol", env = "LOADLAB_PROBE_SYMBOLS", value_delimiter = ',')]
        symbols: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long, env = "LOADLAB_JSON")]
        json: bool,
    },
    /// Capture kernel lock contention and a CPU profile of the whole node for a while, like
    /// `perf lock contention -a -- sleep D` (Ctrl-C ends the window early).
    Capture(AgentCaptureArgs),
    /// Serve the agent over gRPC until interrupted.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "LOADLAB_AGENT_LISTEN", default_value_t = SocketAddr::from(([127, 0, 0, 1], loadlab_proto::AGENT_PORT)))]
        listen: SocketAddr,
        /// File whose first line is the bearer token callers must send; required to listen
        /// beyond loopback.
        #[arg(long, env = "LOADLAB_AGENT_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// Address nginx targets listen on, so generators on other hosts reach them (a pod's
        /// IP on a cluster); loopback by default.
        #[arg(long, env = "LOADLAB_TARGET_ADDRESS", default_value = "127.0.0.1")]
        target_address: IpAddr,
        /// Name this node by `NAME` in its facts instead of the hostname (on a cluster: the
        /// Kubernetes node name).
        #[arg(long, env = "LOADLAB_NODE_NAME")]
        node_name: Option<String>,
        #[command(flatten)]
        tls: TlsServerArgs,
    },
}

#[derive(Debug, Args)]
pub struct AgentCaptureArgs {
    /// How long to capture.
    #[arg(short, long, env = "LOADLAB_CAPTURE_DURATION", default_value = "5s", value_parser = WrittenDuration::parse)]
    pub duration: WrittenDuration,
    /// CPU profile sampling frequency in Hz; 0 for no profile.
    #[arg(long, env = "LOADLAB_CPU_PROFILE_HZ", default_value_t = 499)]
    pub cpu_profile_hz: u32,
    /// Leave lock contention out.
    #[arg(long, env = "LOADLAB_NO_LOCKS")]
    pub no_locks: bool,
    /// Where lock contention is seen: the lock tracepoints (Linux 5.19 and later), kprobes on
    /// the lock slow paths (any kernel with kprobes), or the first that works.
    #[arg(long, env = "LOADLAB_LOCK_SOURCE", value_enum, default_value = "auto")]
    pub lock_source: LockSourceArg,
    /// Rows of locks and of CPU symbols shown (the JSON output has every lock).
    #[arg(long, env = "LOADLAB_CAPTURE_TOP", default_value_t = 15)]
    pub top: usize,
    /// Print one JSON object instead of text.
    #[arg(long, env = "LOADLAB_JSON")]
    pub json: bool,
    /// Also write the CPU profile's folded stacks (`comm;outer;...;inner count` per line, the
    /// input of flamegraph.pl and inferno) to this file.
    #[arg(long, env = "LOADLAB_CAPTURE_FOLDED", value_name = "FILE")]
    pub folded: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LockSourceArg {
    Auto,
    Tracepoints,
    SlowPaths,
}

impl From<LockSourceArg> for loadlab_agent::lockprobe::SourceChoice {
    fn from(arg: LockSourceArg) -> Self {
        match arg {
            LockSourceArg::Auto => Self::Auto,
            LockSourceArg::Tracepoints => Self::Tracepoints,
            LockSourceArg::SlowPaths => Self::SlowPaths,
        }
    }
}

/// TLS for a gRPC server: both files, or neither (plain HTTP/2).
#[derive(Debug, Args)]
pub struct TlsServerArgs {
    /// PEM certificate (chain) the server presents; with --tls-key.
    #[arg(long, env = "LOADLAB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "LOADLAB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LoadgenArgs {
    #[command(subcommand)]
    pub command: LoadgenCommand,
}

#[derive(Debug, Subcommand)]
pub enum LoadgenCommand {
    /// Serve the generator over gRPC until interrupted.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "LOADLAB_LOADGEN_LISTEN", default_value_t = SocketAddr::from(([127, 0, 0, 1], loadlab_proto::LOADGEN_PORT)))]
        listen: SocketAddr,
        /// Also allow storms against this address (loopback is always allowed). Repeatable.
        #[arg(long = "allow", env = "LOADLAB_LOADGEN_ALLOW", value_delimiter = ',')]
        allow: Vec<IpAddr>,
        /// File whose first line is the bearer token callers must send; required to listen
        /// beyond loopback.
        #[arg(long, env = "LOADLAB_LOADGEN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        tls: TlsServerArgs,
    },
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Experiment id, as printed by `loadlab run`.
    pub experiment: uuid::Uuid,
    /// `table` (the terminal report), `text` (plain text within 80 columns, to paste into a
    /// commit message or a list reply) or `json`.
    #[arg(long, value_enum, env = "LOADLAB_FORMAT", default_value = "table")]
    pub format: ReportFormat,
    /// Print JSON (the same as `--format json`).
    #[arg(long, env = "LOADLAB_JSON")]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LOADLAB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Bearer token that POST /api/v1/experiments and /api/v1/runs require; ingest is off
    /// without one.
    #[arg(long, env = "LOADLAB_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Token every read under /api/v1 then needs (a bearer token, or the dashboard asks for
    /// it); without one reads are open. Health, metrics and the dashboard's files stay open.
    #[arg(long, env = "LOADLAB_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct FlamegraphArgs {
    /// Experiment id, as printed by `loadlab run`.
    pub experiment: uuid::Uuid,
    /// The cohort to draw.
    #[arg(long)]
    pub cohort: String,
    /// Draw the difference from this cohort instead (red: more time in --cohort).
    #[arg(long)]
    pub against: Option<String>,
    /// Output file; `<experiment>-<cohort>.svg` by default.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DbArgs {
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Print a URL for the results database (for DATABASE_URL or psql).
    Url,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CloseArg {
    Fin,
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HandshakeAckArg {
    Separate,
    WithRequest,
}

/// CPU numbers from a kernel-style list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<u32>);

fn cpu_list(text: &str) -> Result<CpuList, String> {
    match loadlab_agent::cpus::parse_list(text) {
        Some(cpus) if !cpus.is_empty() => Ok(CpuList(cpus)),
        _ => Err(format!(
            "{text:?} is not a CPU list: numbers and ranges separated by commas, like 0-3,6"
        )),
    }
}
