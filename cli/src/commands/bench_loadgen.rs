//! `loadlab bench loadgen`: loadlab's storm against wrk on one local nginx, in the same run.
//! Both tools run as child processes so their CPU time (from the kernel's child rusage) and
//! peak memory (VmHWM) are measured the same way.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum;
use loadlab_agent::nginx::{NginxSettings, NginxTarget, WorkerCpus, find_nginx};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

use super::bench_support::{Measured, measure_child, median, spread};
use crate::args::BenchLoadgenArgs;
use crate::render::thousands;

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn find_wrk() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("wrk"))
        .find(|p| p.is_file())
        .context("wrk not found: install it with `apt-get install wrk`")
}

fn storm_command(url: &str, flags: &[String]) -> anyhow::Result<Command> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("storm").arg(url).args(flags).arg("--json");
    Ok(command)
}

async fn run_loadlab(url: &str, flags: &[String]) -> anyhow::Result<(Measured, serde_json::Value)> {
    let (out, mut measured) = measure_child(storm_command(url, flags)?).await?;
    let json: serde_json::Value =
        serde_json::from_str(&out).context("loadlab storm printed no JSON")?;
    measured.connections = json["completed_connections"].as_f64().unwrap_or(0.0);
    measured.per_second = json["connections_per_second"].as_f64().unwrap_or(0.0);
    measured.errors = json["failed_connections"].as_f64().unwrap_or(0.0);
    Ok((measured, json))
}

/// Reads wrk's text summary: "N requests in Xs", "Requests/sec: R", and its error lines.
fn parse_wrk(out: &str) -> anyhow::Result<(f64, f64, f64)> {
    let mut requests = None;
    let mut per_second = None;
    let mut errors = 0.0;
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            per_second = rest.trim().parse().ok();
        } else if line.contains(" requests in ") {
            requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<f64>().ok())
                .sum::<f64>();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    match (requests, per_second) {
        (Some(requests), Some(per_second)) => Ok((requests, per_second, errors)),
        _ => bail!("cannot read wrk's output:\n{out}"),
    }
}

async fn run_wrk(
    wrk: &PathBuf,
    url: &str,
    threads: usize,
    connections: u32,
    duration: Duration,
    timeout: &str,
) -> anyhow::Result<Measured> {
    let mut command = Command::new(wrk);
    command
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(["--timeout", timeout, "-H", "Connection: close", url]);
    let (out, mut measured) = measure_child(command).await?;
    let (requests, per_second, errors) = parse_wrk(&out)?;
    measured.connections = requests;
    measured.per_second = per_second;
    measured.errors = errors;
    Ok(measured)
}

/// A server that holds every connection for `hold` before answering: a slow target that keeps
/// many connections open at once.
async fn slow_server(hold: Duration) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                tokio::time::sleep(hold).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                    )
                    .await;
            });
        }
    });
    Ok(address)
}

/// One contender of the closed-loop comparison.
struct Contender {
    name: &'static str,
    /// `loadlab storm`'s flags; `None` is wrk.
    storm_flags: Option<Vec<String>>,
    runs: Vec<Measured>,
}

impl Contender {
    fn median(&self, of: fn(&Measured) -> f64) -> f64 {
        median(&mut self.runs.iter().map(of).collect::<Vec<_>>())
    }
}

/// A value's name on the command line, as clap spells it.
fn flag_value(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

pub(super) async fn run(args: BenchLoadgenArgs) -> anyhow::Result<()> {
    let wrk = find_wrk()?;
    // Both tools and the slow server need a descriptor per connection.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    let threads = if args.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        args.threads
    };
    let settings = NginxSettings {
        workers: Some(args.nginx_workers),
        reuseport: false,
        backlog: None,
    };
    let target = bench_nginx(&settings, threads).await?;
    let url = format!("http://{}/", target.endpoint());
    let duration = args.duration.0;
    let (close, handshake_ack) = (flag_value(args.close), flag_value(args.handshake_ack));
    println!(
        "bench loadgen · nginx {} worker(s) at {url} · {} connections · {} threads · {} s × {} rounds",
        args.nginx_workers,
        args.connections,
        threads,
        duration.as_secs_f64(),
        args.rounds
    );
    println!(
        "  loadlab/wrk-like: connections as wrk makes them (handshake ACK separate, close with fin)"
    );
    println!("  loadlab/lean:     handshake ACK {handshake_ack}, close with {close}");
    println!("  wrk:              -H 'Connection: close'");
    println!(
        "\n{:>5}  {:>17}  {:>10}  {:>7}  {:>16}  {:>15}",
        "round", "tool", "conn/s", "errors", "user ms/1k conn", "sys ms/1k conn"
    );
    let storm_flags = |connections: u32, close: &str, handshake_ack: &str| {
        [
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{}ms", duration.as_millis()),
            "-t",
            &threads.to_string(),
            "--close",
            close,
            "--handshake-ack",
            handshake_ack,
        ]
        .map(String::from)
        .to_vec()
    };
    let mut contenders = [
        Contender {
            name: "loadlab/wrk-like",
            storm_flags: Some(storm_flags(args.connections, "fin", "separate")),
            runs: Vec::new(),
        },
        Contender {
            name: "loadlab/lean",
            storm_flags: Some(storm_flags(args.connections, &close, &handshake_ack)),
            runs: Vec::new(),
        },
        Contender {
            name: "wrk",
            storm_flags: None,
            runs: Vec::new(),
        },
    ];
    for round in 1..=args.rounds {
        // Rotate the order, so no tool always runs on a warmer (or fuller) machine.
        for turn in 0..contenders.len() {
            let contender = &mut contenders[(turn + round as usize) % contenders.len()];
            let measured = match &contender.storm_flags {
                Some(flags) => run_loadlab(&url, flags).await?.0,
                None => run_wrk(&wrk, &url, threads, args.connections, duration, "10s").await?,
            };
            let (user, system) = measured.cpu_ms_per_thousand();
            println!(
                "{round:>5}  {:>17}  {:>10}  {:>7}  {user:>16.2}  {system:>15.2}",
                contender.name,
                thousands(measured.per_second as u64),
                measured.errors
            );
            contender.runs.push(measured);
        }
    }
    println!("\nmedians                   conn/s   user+sys CPU ms per 1,000 connections");
    for contender in &contenders {
        let (user, system) = (
            contender.median(|m| m.cpu_ms_per_thousand().0),
            contender.median(|m| m.cpu_ms_per_thousand().1),
        );
        println!(
            "  {:<17} {:>12}   {user:.2} + {system:.2} = {:.2}",
            contender.name,
            thousands(contender.median(|m| m.per_second) as u64),
            user + system
        );
    }
    let [wrk_like, lean, wrk_runs] = &contenders;
    for loadlab in [wrk_like, lean] {
        let mut ratios: Vec<f64> = loadlab
            .runs
            .iter()
            .zip(&wrk_runs.runs)
            .map(|(l, w)| l.per_second / w.per_second)
            .collect();
        let (min, median, max) = spread(&mut ratios);
        println!(
            "  conn/s ratio to wrk per round, {}: min {min:.3} · median {median:.3} · max {max:.3}",
            loadlab.name
        );
    }
    let loadlab_rate = wrk_like.median(|m| m.per_second);
    target.stop().await?;

    println!(
        "\nopen loop against the same nginx, connections made as wrk makes them (rate as a share of loadlab/wrk-like's closed-loop median)"
    );
    let target = bench_nginx(&settings, threads).await?;
    let url = format!("http://{}/", target.endpoint());
    for share in [0.5, 0.9] {
        let rate = (loadlab_rate * share).max(1.0);
        let mut flags = storm_flags(args.connections * 16, "fin", "separate");
        flags.extend(["--rate".to_string(), format!("{rate:.0}")]);
        let (measured, json) = run_loadlab(&url, &flags).await?;
        println!(
            "  {:>3.0}%  offered {:>9} conn/s  achieved {:>9}  achieved/offered {:.4}  missed {}  p99 {:.2} ms  errors {}",
            share * 100.0,
            thousands(rate as u64),
            thousands(measured.per_second as u64),
            measured.per_second / rate,
            json["missed_arrivals"],
            json["latency_us"]["p99"].as_f64().unwrap_or(0.0) / 1000.0,
            measured.errors
        );
    }
    target.stop().await?;

    let hold = Duration::from_secs(2);
    let slow = slow_server(hold).await?;
    let slow_url = format!("http://{slow}/");
    let held = args.memory_connections;
    println!(
        "\nmemory holding {} concurrent connections (a target that answers after {} s)",
        thousands(held.into()),
        hold.as_secs()
    );
    let rate = f64::from(held) / hold.as_secs_f64();
    let flags = vec![
        "-c".to_string(),
        (held + held / 5).to_string(),
        "-d".into(),
        "4s".into(),
        "--rate".into(),
        format!("{rate:.0}"),
        "-t".into(),
        threads.to_string(),
    ];
    let (measured, json) = run_loadlab(&slow_url, &flags).await?;
    println!(
        "  loadlab (open loop {}/s): peak RSS {} KiB, {} completed, errors {}",
        thousands(rate as u64),
        thousands(measured.peak_rss_kib),
        thousands(measured.connections as u64),
        json["errors"]
    );
    let measured = run_wrk(
        &wrk,
        &slow_url,
        threads,
        held,
        Duration::from_secs(4),
        "10s",
    )
    .await?;
    println!(
        "  wrk (closed loop, {} connections): peak RSS {} KiB, {} completed, errors {}",
        thousands(held.into()),
        thousands(measured.peak_rss_kib),
        thousands(measured.connections as u64),
        measured.errors
    );
    Ok(())
}

/// The benchmark's nginx on loopback, its workers placed by the kernel.
async fn bench_nginx(settings: &NginxSettings, threads: usize) -> anyhow::Result<NginxTarget> {
    let cpus = WorkerCpus::Any {
        logical_cpus: threads as u32,
    };
    Ok(NginxTarget::start(&find_nginx()?, settings, &cpus, LOCALHOST).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let out = "Running 5s test @ http://127.0.0.1:1/\n  2 threads and 64 connections\n  281234 requests in 5.00s, 40.23MB read\n  Socket errors: connect 0, read 3, write 0, timeout 2\n  Non-2xx or 3xx responses: 4\nRequests/sec:  56246.80\nTransfer/sec:      8.05MB\n";
        assert_eq!(parse_wrk(out).unwrap(), (281234.0, 56246.80, 9.0));
        assert!(parse_wrk("garbage").is_err());
    }

    #[test]
    fn contenders_are_given_the_storm_flags_values() {
        use crate::args::{CloseArg, HandshakeAckArg};
        assert_eq!(flag_value(HandshakeAckArg::WithRequest), "with-request");
        assert_eq!(flag_value(CloseArg::Reset), "reset");
    }
}
