//! The REST API through its router (no socket) on a real Postgres.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use loadlab_api::{ApiState, app};
use loadlab_results::Store;
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

#[path = "../../results/tests/common/mod.rs"]
mod common;
use common::{experiment, run, seeded_faster_patched, store};

async fn get(store: &Store, uri: &str) -> (StatusCode, Option<String>, Vec<u8>) {
    let response = app(ApiState::new(store.clone()))
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, content_type, body)
}

async fn get_json(store: &Store, uri: &str) -> (StatusCode, Value) {
    let (status, content_type, body) = get(store, uri).await;
    assert_eq!(content_type.as_deref(), Some("application/json"), "{uri}");
    (status, serde_json::from_slice(&body).unwrap())
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, says: &str) {
    assert_eq!(status, expected, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(body["detail"].as_str().unwrap().contains(says), "{body}");
}

#[tokio::test]
async fn health_and_readiness() {
    let store = store().await;
    assert_eq!(
        get_json(&store, "/healthz").await,
        (StatusCode::OK, serde_json::json!({"status": "ok"}))
    );
    assert_eq!(
        get_json(&store, "/readyz").await,
        (StatusCode::OK, serde_json::json!({"status": "ready"}))
    );
}

#[tokio::test]
async fn experiments_are_listed_filtered_and_paged() {
    let (store, id) = seeded_faster_patched().await;
    let (status, page) = get_json(&store, "/api/v1/experiments").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"][0]["id"], id.to_string());
    assert_eq!(page["limit"], 50);
    assert_eq!(page["items"][0]["planned_runs"], 6);
    let (_, found) = get_json(&store, "/api/v1/experiments?search=pol").await;
    assert_eq!(found["items"][0]["id"], id.to_string());
    // LIKE's wildcards are matched as themselves.
    let (_, wildcard) = get_json(&store, "/api/v1/experiments?search=e%25h").await;
    assert_eq!(wildcard["items"].as_array().unwrap().len(), 0);
    let (_, none) = get_json(&store, "/api/v1/experiments?name=other").await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let (_, skipped) = get_json(&store, "/api/v1/experiments?offset=1&limit=1").await;
    assert_eq!(skipped["items"].as_array().unwrap().len(), 0);
    for (uri, says) in [
        ("/api/v1/experiments?limit=0", "limit"),
        ("/api/v1/experiments?limit=abc", "limit"),
        ("/api/v1/experiments?offset=-1", "offset"),
        ("/api/v1/experiments?offset=1000000001", "offset"),
        ("/api/v1/experiments?colour=red", "colour"),
        ("/api/v1/experiments?name=C%00", "NUL"),
        ("/api/v1/experiments?search=C%00", "NUL"),
    ] {
        let (status, body) = get_json(&store, uri).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, says);
    }
}

#[tokio::test]
async fn one_experiment_and_its_runs() {
    let (store, id) = seeded_faster_patched().await;
    let (status, experiment) = get_json(&store, &format!("/api/v1/experiments/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        experiment["cohorts"],
        serde_json::json!(["unpatched", "patched"])
    );
    let (status, runs) = get_json(&store, &format!("/api/v1/experiments/{id}/runs")).await;
    assert_eq!(status, StatusCode::OK);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 6);
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["total_latency"]["max_us"], 300);
    assert!(
        runs[0].get("total_histogram").is_none(),
        "no raw histograms in the API"
    );

    let unknown = Uuid::new_v4();
    for uri in [
        format!("/api/v1/experiments/{unknown}"),
        format!("/api/v1/experiments/{unknown}/runs"),
    ] {
        let (status, body) = get_json(&store, &uri).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not found");
    }
    let (status, body) = get_json(&store, "/api/v1/experiments/not-a-uuid").await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "not an experiment id",
    );
}

#[tokio::test]
async fn the_comparison_answers_faster_by_how_much_and_how_sure() {
    let (store, id) = seeded_faster_patched().await;
    let (status, body) = get_json(&store, &format!("/api/v1/experiments/{id}/comparison")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["method"].as_str().unwrap().contains("Welch"));
    let patched = &body["cohorts"][1];
    assert_eq!(patched["name"], "patched");
    assert_eq!(patched["comparison"]["verdict"], "improved");
    let ratio = patched["comparison"]["ratio"].as_f64().unwrap();
    assert!((ratio - 1.6).abs() < 0.01);
    let ci = patched["comparison"]["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() < ratio && ratio < ci[1].as_f64().unwrap());
    assert_eq!(patched["locks"][0]["lock"], "epmutex");
    assert_eq!(patched["cpu_symbols"][0]["symbol"], "osq_lock");

    let (_, flipped) = get_json(
        &store,
        &format!("/api/v1/experiments/{id}/comparison?baseline=patched"),
    )
    .await;
    assert_eq!(flipped["cohorts"][0]["comparison"]["verdict"], "regressed");
    let (status, body) = get_json(
        &store,
        &format!("/api/v1/experiments/{id}/comparison?baseline=nope"),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not a cohort");
}

#[tokio::test]
async fn the_comparison_as_text_to_paste_fits_80_columns() {
    let (store, id) = seeded_faster_patched().await;
    let (status, content_type, body) = get(
        &store,
        &format!("/api/v1/experiments/{id}/comparison?format=text"),
    )
    .await;
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(content_type.as_deref(), Some("text/plain; charset=utf-8"));
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    let conn = text.lines().find(|l| l.ends_with("conn/s")).unwrap();
    assert!(conn.contains("+60.0%"), "{text}");
    assert!(text.contains("conn/s: faster, 95% CI +"), "{text}");
    assert!(
        text.contains("lock.epmutex<-eventpoll_release_file"),
        "{text}"
    );
    assert!(text.contains("cpu.osq_lock"), "{text}");
    // What the design could have seen, beside what it saw.
    assert!(text.contains("these runs detect a change of ±"), "{text}");
    let (_, flipped_type, flipped) = get(
        &store,
        &format!("/api/v1/experiments/{id}/comparison?format=text&baseline=patched"),
    )
    .await;
    assert_eq!(flipped_type.as_deref(), Some("text/plain; charset=utf-8"));
    assert!(String::from_utf8(flipped).unwrap().contains("slower"));
    let (status, body) = get_json(
        &store,
        &format!("/api/v1/experiments/{id}/comparison?format=xml"),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "use json");
}

#[tokio::test]
async fn flamegraphs_are_svg() {
    let (store, id) = seeded_faster_patched().await;
    let (status, content_type, body) = get(
        &store,
        &format!("/api/v1/experiments/{id}/flamegraph?cohort=patched"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("image/svg+xml"));
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("eventpoll_release_file")
    );
    let (status, _, body) = get(
        &store,
        &format!("/api/v1/experiments/{id}/flamegraph?cohort=patched&against=unpatched"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("patched against unpatched")
    );
    let (status, body) = get_json(&store, &format!("/api/v1/experiments/{id}/flamegraph")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "cohort");
    let (status, body) = get_json(
        &store,
        &format!("/api/v1/experiments/{id}/flamegraph?cohort=x"),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not a cohort");
}

#[tokio::test]
async fn call_chains_into_a_symbol_per_cohort() {
    let (store, id) = seeded_faster_patched().await;
    let (status, chains) = get_json(
        &store,
        &format!("/api/v1/experiments/{id}/callchains?symbol=osq_lock"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(chains["symbol"], "osq_lock");
    let unpatched = &chains["cohorts"][0];
    assert_eq!(unpatched["cohort"], "unpatched");
    // Three runs of 100 samples, 56 of each under osq_lock.
    assert_eq!(unpatched["samples"], 300);
    assert_eq!(unpatched["children_share"], 0.56);
    assert_eq!(
        unpatched["chains"][0]["frames"],
        serde_json::json!(["osq_lock", "eventpoll_release_file", "__fput", "nginx"])
    );
    assert_eq!(unpatched["chains"][0]["samples"], 168);
    for (query, expected, says) in [
        ("", StatusCode::BAD_REQUEST, "symbol"),
        ("?symbol=", StatusCode::BAD_REQUEST, "symbol"),
        ("?symbol=a;b", StatusCode::BAD_REQUEST, "one function name"),
        ("?symbol=x&colour=red", StatusCode::BAD_REQUEST, "colour"),
    ] {
        let (status, body) = get_json(
            &store,
            &format!("/api/v1/experiments/{id}/callchains{query}"),
        )
        .await;
        assert_error(status, &body, expected, says);
    }
    let unknown = Uuid::new_v4();
    let (status, body) = get_json(
        &store,
        &format!("/api/v1/experiments/{unknown}/callchains?symbol=osq_lock"),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not found");
}

#[tokio::test]
async fn nodes_and_unknown_paths() {
    let (store, _) = seeded_faster_patched().await;
    let (status, nodes) = get_json(&store, "/api/v1/nodes").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(nodes[0]["hostname"], "lab-1");
    assert!(nodes[0]["id"].as_str().unwrap().starts_with("lab-1/"));
    let (status, body) = get_json(&store, "/api/v1/nowhere").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "no such endpoint");
}

#[tokio::test]
async fn kernels_compare_across_experiments_by_hardware() {
    let store = store().await;
    let experiment = experiment(&store).await;
    for (repetition, (old, new)) in [(1000.0, 1600.0), (1010.0, 1610.0), (990.0, 1590.0)]
        .into_iter()
        .enumerate()
    {
        let mut a = run(experiment.id, "unpatched", repetition as i32 + 1, old);
        a.node.kernel_release = "6.1.0-47-cloud-amd64".into();
        let mut b = run(experiment.id, "patched", repetition as i32 + 1, new);
        b.node.kernel_release = "6.1.0-56-cloud-amd64".into();
        store.record_run(&a).await.unwrap();
        store.record_run(&b).await.unwrap();
    }
    let (status, body) = get_json(
        &store,
        "/api/v1/kernels/compare?a=6.1.0-47*&b=6.1.0-56*&groupBy=cpu_model",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let group = &body["groups"][0];
    assert_eq!(group["cpu_model"], "Test CPU");
    assert_eq!(
        group["a"]["kernels"],
        serde_json::json!(["6.1.0-47-cloud-amd64"])
    );
    assert_eq!(group["comparison"]["verdict"], "improved");
    assert_eq!(group["a"]["nodes"], 1);
    assert_eq!(group["workload"]["load"]["connections"], 64);
    assert!(body["pooling"].as_str().unwrap().contains("never pooled"));
    // A run of another workload gets a group of its own instead of joining this one.
    let mut keep_alive = run(experiment.id, "patched", 4, 9000.0);
    keep_alive.node.kernel_release = "6.1.0-56-cloud-amd64".into();
    keep_alive.load = serde_json::json!({"connections": 64, "requestsPerConnection": 100});
    store.record_run(&keep_alive).await.unwrap();
    let (_, body) = get_json(
        &store,
        "/api/v1/kernels/compare?a=6.1.0-47*&b=6.1.0-56*&groupBy=cpu_model",
    )
    .await;
    let groups = body["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{body}");
    let storms = groups
        .iter()
        .find(|g| g["workload"]["load"]["requestsPerConnection"].is_null())
        .unwrap();
    assert_eq!(
        (storms["a"]["runs"].as_u64(), storms["b"]["runs"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(storms["comparison"]["verdict"], "improved");
    let (_, empty) = get_json(&store, "/api/v1/kernels/compare?a=5.*&b=6.1.0-56*").await;
    assert!(empty["groups"][0]["comparison"].is_null());
    for (uri, says) in [
        ("/api/v1/kernels/compare?a=6.1*", "b"),
        ("/api/v1/kernels/compare?a=&b=x", "patterns"),
        ("/api/v1/kernels/compare?a=x&b=y&groupBy=rack", "groupBy"),
    ] {
        let (status, body) = get_json(&store, uri).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, says);
    }
}

#[tokio::test]
async fn every_documented_path_is_served_with_a_documented_status() {
    let (store, id) = seeded_faster_patched().await;
    let document: Value = serde_json::from_str(loadlab_api::OPENAPI).unwrap();
    let (status, served) = get_json(&store, "/api/openapi.json").await;
    assert_eq!((status, &served), (StatusCode::OK, &document));
    for (path, item) in document["paths"].as_object().unwrap() {
        if item.get("get").is_none() {
            continue;
        }
        let mut uri = path.replace("{id}", &id.to_string());
        let required: Vec<String> = item["get"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query" && p["required"] == true)
            .map(|p| {
                format!(
                    "{}={}",
                    p["name"].as_str().unwrap(),
                    if p["name"] == "cohort" {
                        "patched"
                    } else {
                        "x"
                    }
                )
            })
            .collect();
        if !required.is_empty() {
            uri = format!("{uri}?{}", required.join("&"));
        }
        let (status, _, body) = get(&store, &uri).await;
        let documented = item["get"]["responses"].as_object().unwrap();
        assert!(
            documented.contains_key(status.as_str()),
            "{uri} answered {status}, not documented: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            !String::from_utf8_lossy(&body).contains("no such endpoint"),
            "{uri} is not routed"
        );
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let (store, id) = seeded_faster_patched().await;
    let app = app(ApiState::new(store));
    for uri in [
        format!("/api/v1/experiments/{id}"),
        format!("/api/v1/experiments/{}", Uuid::new_v4()),
        "/healthz".into(),
    ] {
        app.clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
    }
    let response = app
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(
            r#"loadlab_http_requests_total{route="/api/v1/experiments/{id}",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"loadlab_http_requests_total{route="/api/v1/experiments/{id}",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"loadlab_http_requests_total{route="/healthz",status="200"} 1"#),
        "{text}"
    );
    assert!(!text.contains(&id.to_string()), "ids never become labels");
}

async fn post(
    app: &axum::Router,
    uri: &str,
    token: Option<&str>,
    body: String,
) -> (StatusCode, Value) {
    let mut request = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn ingest_stores_experiments_and_runs_once_behind_the_token() {
    let store = store().await;
    let app = app(ApiState::new(store.clone()).with_ingest_token("s3cret"));
    let id = Uuid::new_v4();
    let experiment = serde_json::json!({
        "id": id, "name": "fleet", "spec": {"repetitions": 1}, "baseline": "unpatched",
        "cohorts": ["unpatched", "patched"]
    })
    .to_string();
    assert_eq!(
        post(&app, "/api/v1/experiments", None, experiment.clone())
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(
            &app,
            "/api/v1/experiments",
            Some("wrong"),
            experiment.clone()
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = post(
        &app,
        "/api/v1/experiments",
        Some("s3cret"),
        experiment.clone(),
    )
    .await;
    assert_eq!(
        (status, body["created"].as_bool()),
        (StatusCode::CREATED, Some(true))
    );
    let (status, body) = post(&app, "/api/v1/experiments", Some("s3cret"), experiment).await;
    assert_eq!(
        (status, body["created"].as_bool()),
        (StatusCode::OK, Some(false))
    );

    let run = run(id, "patched", 1, 1500.0);
    let json = serde_json::to_string(&run).unwrap();
    let (status, body) = post(&app, "/api/v1/runs", Some("s3cret"), json.clone()).await;
    assert_eq!(
        (status, body["created"].as_bool()),
        (StatusCode::CREATED, Some(true)),
        "{body}"
    );
    let (status, _) = post(&app, "/api/v1/runs", Some("s3cret"), json).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        store.experiment_runs(id).await.unwrap(),
        vec![run.clone()],
        "stored exactly as sent"
    );

    let mut other = run.clone();
    other.id = Uuid::new_v4();
    for (change, says, expected) in [
        (
            serde_json::json!({"cohort": "tuned"}),
            "not a cohort",
            StatusCode::BAD_REQUEST,
        ),
        (
            serde_json::json!({"completed_connections": -1}),
            "negative",
            StatusCode::BAD_REQUEST,
        ),
        (
            serde_json::json!({"total_histogram": "bm90IGEgaGlzdG9ncmFt"}),
            "total_histogram",
            StatusCode::BAD_REQUEST,
        ),
        (
            serde_json::json!({"total_histogram": "***"}),
            "base64",
            StatusCode::BAD_REQUEST,
        ),
        (
            serde_json::json!({"surprise": 1}),
            "unknown field",
            StatusCode::BAD_REQUEST,
        ),
        (
            serde_json::json!({"experiment_id": Uuid::new_v4()}),
            "not found",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let mut value = serde_json::to_value(&other).unwrap();
        for (key, field) in change.as_object().unwrap() {
            value[key] = field.clone();
        }
        let (status, body) = post(&app, "/api/v1/runs", Some("s3cret"), value.to_string()).await;
        assert_error(status, &body, expected, says);
    }
    let (status, body) = post(&app, "/api/v1/runs", Some("s3cret"), "{not json".into()).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "");
    assert_eq!(
        store.experiment_runs(id).await.unwrap().len(),
        1,
        "nothing half-written"
    );
}

#[tokio::test]
async fn without_a_token_ingest_is_off() {
    let store = store().await;
    let app = app(ApiState::new(store));
    let (status, body) = post(&app, "/api/v1/runs", Some("anything"), "{}".into()).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "LOADLAB_API_TOKEN");
}

/// A body that never ends: chunks of a JSON array of zeros, counted as they are taken.
fn endless_body(taken: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Body {
    const CHUNK: &[u8] = b"0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,";
    let opening = futures::stream::once(async { Ok::<_, std::io::Error>(&b"{\"target\":["[..]) });
    let zeros = futures::stream::repeat_with(move || {
        taken.fetch_add(CHUNK.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(CHUNK)
    });
    Body::from_stream(futures::StreamExt::chain(opening, zeros))
}

async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn ingest_checks_the_token_before_reading_a_byte_of_the_body() {
    let store = store().await;
    for (state, token, expected) in [
        (
            ApiState::new(store.clone()),
            "anything",
            StatusCode::FORBIDDEN,
        ),
        (
            ApiState::new(store.clone()).with_ingest_token("s3cret"),
            "wrong",
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let app = app(state);
        for uri in ["/api/v1/runs", "/api/v1/experiments"] {
            let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let request = Request::post(uri)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(endless_body(taken.clone()))
                .unwrap();
            let (status, body) = send(&app, request).await;
            assert_eq!(status, expected, "{uri}: {body}");
            assert_eq!(
                taken.load(std::sync::atomic::Ordering::Relaxed),
                0,
                "{uri}: the body was read before the token was checked"
            );
        }
    }
}

#[tokio::test]
async fn ingest_bodies_past_their_route_limit_are_refused_unparsed() {
    let store = store().await;
    let app = app(ApiState::new(store.clone()).with_ingest_token("s3cret"));
    // Declared too large: refused before reading.
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let request = Request::post("/api/v1/runs")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .header(header::CONTENT_LENGTH, 64 * 1024 * 1024)
        .body(endless_body(taken.clone()))
        .unwrap();
    let (status, body) = send(&app, request).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "16 MiB");
    assert_eq!(taken.load(std::sync::atomic::Ordering::Relaxed), 0);
    // Streamed without a length: read up to the limit, then refused.
    for (uri, limit) in [("/api/v1/runs", 16), ("/api/v1/experiments", 1)] {
        let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let request = Request::post(uri)
            .header(header::AUTHORIZATION, "Bearer s3cret")
            .body(endless_body(taken.clone()))
            .unwrap();
        let (status, body) = send(&app, request).await;
        assert_error(
            status,
            &body,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("{limit} MiB"),
        );
        let read = taken.load(std::sync::atomic::Ordering::Relaxed);
        assert!(read <= (limit << 20) + 4096, "{uri}: {read} bytes read");
    }
}

#[tokio::test]
async fn a_free_form_value_inside_a_run_is_bounded_before_it_is_parsed() {
    let store = store().await;
    let app = app(ApiState::new(store.clone()).with_ingest_token("s3cret"));
    let experiment = experiment(&store).await;
    let mut value = serde_json::to_value(run(experiment.id, "patched", 1, 1500.0)).unwrap();
    value["target"] = serde_json::json!(vec![0; 40_000]);
    let (status, body) = post(&app, "/api/v1/runs", Some("s3cret"), value.to_string()).await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "more than the 65536",
    );
    assert!(
        store
            .experiment_runs(experiment.id)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_body_that_never_ends_is_answered_at_the_request_deadline() {
    let store = store().await;
    let app = app(ApiState::new(store)
        .with_ingest_token("s3cret")
        .with_request_deadline(std::time::Duration::from_millis(200)));
    let pending = Body::from_stream(futures::stream::pending::<Result<&[u8], std::io::Error>>());
    let request = Request::post("/api/v1/runs")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(pending)
        .unwrap();
    let (status, body) = send(&app, request).await;
    assert_error(
        status,
        &body,
        StatusCode::REQUEST_TIMEOUT,
        "longer than 0.2 s",
    );
}

/// One router, so answers computed once can be reused between requests.
async fn get_json_from(app: &axum::Router, uri: &str) -> Value {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{uri}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn answers_are_reused_only_while_nothing_they_come_from_changed() {
    let (store, id) = seeded_faster_patched().await;
    let app = app(ApiState::new(store.clone()));
    let comparison = format!("/api/v1/experiments/{id}/comparison");
    let fleet = "/api/v1/kernels/compare?a=*&b=*&groupBy=none";
    let succeeded = |body: &Value| body["cohorts"][0]["runs_succeeded"].as_u64().unwrap();
    let fleet_runs = |body: &Value| body["groups"][0]["a"]["runs"].as_u64().unwrap();

    let before = get_json_from(&app, &comparison).await;
    let fleet_before = get_json_from(&app, fleet).await;
    assert_eq!(succeeded(&before), 3);
    assert_eq!(get_json_from(&app, &comparison).await, before);
    assert_eq!(fleet_runs(&fleet_before), 6);

    store
        .record_run(&run(id, "unpatched", 4, 1005.0))
        .await
        .unwrap();
    assert_eq!(succeeded(&get_json_from(&app, &comparison).await), 4);
    assert_eq!(fleet_runs(&get_json_from(&app, fleet).await), 7);

    // A run of another experiment changes the fleet answer, not this comparison's.
    let other = experiment(&store).await;
    store
        .record_run(&run(other.id, "unpatched", 1, 990.0))
        .await
        .unwrap();
    assert_eq!(succeeded(&get_json_from(&app, &comparison).await), 4);
    assert_eq!(fleet_runs(&get_json_from(&app, fleet).await), 8);
}

#[tokio::test]
async fn with_a_read_token_results_need_it_and_health_metrics_and_the_page_do_not() {
    let (store, id) = seeded_faster_patched().await;
    let app = app(ApiState::new(store.clone())
        .with_ingest_token("ingest-s3cret")
        .with_read_token("read s3cret;="));
    let status = |request: Request<Body>| {
        let app = app.clone();
        async move { app.oneshot(request).await.unwrap().status() }
    };
    let comparison = format!("/api/v1/experiments/{id}/comparison");
    for uri in [
        "/api/v1/experiments",
        comparison.as_str(),
        "/api/v1/nodes",
        "/api/v1/kernels/compare?a=*&b=*",
    ] {
        let bare = Request::get(uri).body(Body::empty()).unwrap();
        assert_eq!(status(bare).await, StatusCode::UNAUTHORIZED, "{uri}");
        let wrong = Request::get(uri)
            .header(header::AUTHORIZATION, "Bearer read")
            .body(Body::empty())
            .unwrap();
        assert_eq!(status(wrong).await, StatusCode::UNAUTHORIZED, "{uri}");
        for token in ["read s3cret;=", "ingest-s3cret"] {
            let bearer = Request::get(uri)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            assert_eq!(status(bearer).await, StatusCode::OK, "{uri}");
        }
        // The dashboard's cookie, as encodeURIComponent wrote it, beside another site cookie.
        let cookie = Request::get(uri)
            .header(
                header::COOKIE,
                "theme=dark; loadlab_token=read%20s3cret%3B%3D",
            )
            .body(Body::empty())
            .unwrap();
        assert_eq!(status(cookie).await, StatusCode::OK, "{uri}");
    }
    let (refused, body) = send(
        &app,
        Request::get("/api/v1/nodes").body(Body::empty()).unwrap(),
    )
    .await;
    assert_error(refused, &body, StatusCode::UNAUTHORIZED, "read token");
    for open in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/openapi.json",
        "/",
        "/assets/app.js",
    ] {
        let request = Request::get(open).body(Body::empty()).unwrap();
        assert_eq!(status(request).await, StatusCode::OK, "{open}");
    }
    // The read token reads; it does not ingest.
    let (status, _) = send(
        &app,
        Request::post("/api/v1/experiments")
            .header(header::AUTHORIZATION, "Bearer read s3cret;=")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
