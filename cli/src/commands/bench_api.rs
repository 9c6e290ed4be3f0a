//! `loadlab bench api`: seeds a scratch database through the ingest endpoint, then measures the
//! comparison and fleet endpoints under concurrent clients. Requests go through the API router
//! in this process (no socket), so the figures are the handlers' and Postgres' time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use loadlab_api::{ApiState, app};
use loadlab_proto::histogram::{encode_histogram, latency_histogram};
use loadlab_results::model::WindowCounters;
use loadlab_results::{Database, NewExperiment, NodeRecord, RunOutcome, RunRecord};
use tokio::task::JoinSet;
use tower::ServiceExt;
use uuid::Uuid;

use crate::args::BenchApiArgs;

const TOKEN: &str = "bench";

/// A small deterministic generator, so every bench seeds the same data.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn node(index: usize) -> NodeRecord {
    let kernels = ["6.1.0-47-cloud-amd64", "6.1.0-56-cloud-amd64"];
    NodeRecord {
        hostname: format!("lab-{index}"),
        kernel_release: kernels[index % 2].into(),
        kernel_version: "#1 SMP PREEMPT_DYNAMIC Debian".into(),
        cpu_model: format!("CPU model {}", index / 2 % 25),
        logical_cpus: 8 << (index / 2 % 3),
        memory_bytes: 64 << 30,
        facts: serde_json::json!({}),
    }
}

async fn call(app: &Router, request: Request<Body>) -> anyhow::Result<(StatusCode, Vec<u8>)> {
    let response = app.clone().oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, body))
}

fn post(uri: &str, body: String) -> anyhow::Result<Request<Body>> {
    Ok(Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(body))?)
}

/// Runs `requests` GETs spread over `clients` concurrent tasks, returning their latencies.
async fn measure(
    app: &Router,
    clients: usize,
    uris: Vec<String>,
) -> anyhow::Result<(Histogram<u64>, Duration)> {
    let uris = Arc::new(uris);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for client in 0..clients {
        let (app, uris) = (app.clone(), uris.clone());
        tasks.spawn(async move {
            let mut latencies = latency_histogram();
            for uri in uris.iter().skip(client).step_by(clients) {
                let begun = Instant::now();
                let (status, body) =
                    call(&app, Request::get(uri.as_str()).body(Body::empty())?).await?;
                if status != StatusCode::OK {
                    bail!(
                        "{uri} answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                latencies.record(begun.elapsed().as_micros() as u64)?;
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut all = latency_histogram();
    while let Some(joined) = tasks.join_next().await {
        all.add(joined??)?;
    }
    Ok((all, started.elapsed()))
}

pub async fn run(args: BenchApiArgs) -> anyhow::Result<()> {
    if args.experiments == 0
        || args.runs_per_experiment < 2
        || args.clients == 0
        || args.requests < 4
    {
        bail!(
            "bench api needs at least 1 experiment, 2 runs per experiment, 1 client and 4 requests"
        );
    }
    if args.node_types < 2 || args.node_types % 2 == 1 {
        bail!("--node-types must be an even number of at least 2 (half per kernel)");
    }
    let store = Database::from_env()
        .scratch()
        .await
        .context("a scratch database for the bench")?;
    let app = app(ApiState::new(store).with_ingest_token(TOKEN));
    let mut random = SplitMix(7);
    let histogram = {
        let mut h = latency_histogram();
        for _ in 0..1000 {
            h.record(500 + random.next() % 3000)?;
        }
        encode_histogram(&h)?
    };
    println!(
        "bench api · {} experiments × {} runs over {} node types · {} concurrent clients · in-process router, real Postgres",
        args.experiments, args.runs_per_experiment, args.node_types, args.clients
    );

    let mut experiments = Vec::new();
    for index in 0..args.experiments {
        let experiment = NewExperiment {
            id: Uuid::new_v4(),
            name: format!("bench-{}", index % 10),
            spec: serde_json::json!({"bench": true}),
            baseline: "unpatched".into(),
            cohorts: vec!["unpatched".into(), "patched".into()],
            planned_runs: None,
        };
        let (status, body) = call(
            &app,
            post("/api/v1/experiments", serde_json::to_string(&experiment)?)?,
        )
        .await?;
        if status != StatusCode::CREATED {
            bail!(
                "creating an experiment answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        experiments.push(experiment.id);
    }

    let mut bodies = Vec::with_capacity(args.experiments * args.runs_per_experiment);
    for (e, experiment) in experiments.iter().enumerate() {
        for r in 0..args.runs_per_experiment {
            let patched = r % 2 == 1;
            let node = node((e * 7 + r) % args.node_types.max(1) / 2 * 2 + usize::from(patched));
            let rate = if patched { 1600.0 } else { 1000.0 } * (0.97 + 0.06 * random.unit());
            let run = RunRecord {
                id: Uuid::new_v4(),
                experiment_id: *experiment,
                cohort: if patched { "patched" } else { "unpatched" }.into(),
                repetition: (r / 2 + 1) as i32,
                attempt: 1,
                sequence: r as i32,
                node,
                outcome: RunOutcome::Succeeded,
                started_at: Utc::now(),
                finished_at: Utc::now(),
                target: serde_json::json!({"workers": 1}),
                load: serde_json::json!({"connections": 64}),
                window_seconds: 10.0,
                completed_connections: (rate * 10.0) as i64,
                failed_connections: 0,
                warmup_connections: 0,
                connections_per_second: rate,
                errors: Default::default(),
                connect_histogram: histogram.clone(),
                first_byte_histogram: histogram.clone(),
                total_histogram: histogram.clone(),
                completed_per_second: vec![rate as i64; 10],
                counters: WindowCounters::default(),
                locks: Vec::new(),
                lock_contention_unavailable: None,
                lock_source: None,
                cpu_profile: None,
                cpu_profile_unavailable: None,
                generator_skew_us: None,
            };
            bodies.push(serde_json::to_string(&run)?);
        }
    }
    let runs = bodies.len();
    let bodies = Arc::new(bodies);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for client in 0..args.clients {
        let (app, bodies) = (app.clone(), bodies.clone());
        tasks.spawn(async move {
            for body in bodies.iter().skip(client).step_by(args.clients) {
                let (status, answer) = call(&app, post("/api/v1/runs", body.clone())?).await?;
                if status != StatusCode::CREATED {
                    bail!(
                        "ingest answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let ingest = started.elapsed();
    println!(
        "ingest: {runs} runs in {:.2} s = {:.0} runs/s (POST /api/v1/runs, {} clients)",
        ingest.as_secs_f64(),
        runs as f64 / ingest.as_secs_f64(),
        args.clients
    );

    let comparison_uris: Vec<String> = (0..args.requests)
        .map(|i| {
            format!(
                "/api/v1/experiments/{}/comparison",
                experiments[i % experiments.len()]
            )
        })
        .collect();
    let (latencies, elapsed) = measure(&app, args.clients, comparison_uris).await?;
    report("comparison", &latencies, elapsed);
    let fleet_uris: Vec<String> = (0..args.requests / 4)
        .map(|i| {
            let group = ["cpu", "cpu_model", "none"][i % 3];
            format!("/api/v1/kernels/compare?a=6.1.0-47*&b=6.1.0-56*&groupBy={group}")
        })
        .collect();
    let (latencies, elapsed) = measure(&app, args.clients, fleet_uris).await?;
    report("fleet", &latencies, elapsed);
    Ok(())
}

fn report(name: &str, latencies: &Histogram<u64>, elapsed: Duration) {
    println!(
        "{name:>10}: {} requests · p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms · {:.0} requests/s",
        latencies.len(),
        latencies.value_at_quantile(0.5) as f64 / 1000.0,
        latencies.value_at_quantile(0.99) as f64 / 1000.0,
        latencies.max() as f64 / 1000.0,
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
}
