//! A mock Kubernetes API server (tower-test): an in-memory API that keeps nodes, Secrets and
//! pods, records every request, and answers as the API server does (404 for what is missing,
//! the stored object otherwise).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use loadlab_controller::Experiment;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Cluster {
    pub nodes: Vec<Value>,
    /// By path, e.g. `/api/v1/namespaces/lab/pods/x`.
    pub objects: BTreeMap<String, Value>,
    /// Every request: (method, path, body).
    pub requests: Vec<(String, String, Value)>,
    /// Told of every request, for tests that wait for one.
    pub seen: Option<tokio::sync::mpsc::UnboundedSender<(String, String)>>,
    /// Creations refused as an admission controller would: (path suffix, code, message).
    pub refuse: Option<(String, u16, String)>,
}

impl Cluster {
    pub fn created(&self, kind: &str) -> Vec<Value> {
        self.requests
            .iter()
            .filter(|(m, p, _)| m == "POST" && p.ends_with(kind))
            .map(|(_, _, body)| body.clone())
            .collect()
    }

    pub fn status_patches(&self) -> Vec<Value> {
        self.requests
            .iter()
            .filter(|(m, p, _)| m == "PATCH" && p.ends_with("/status"))
            .map(|(_, _, body)| body["status"].clone())
            .collect()
    }

    pub fn set_pod_status(&mut self, name: &str, status: Value) {
        let path = format!("/api/v1/namespaces/lab/pods/{name}");
        self.objects.get_mut(&path).expect("pod exists")["status"] = status;
    }

    pub fn pod_names(&self) -> Vec<String> {
        self.objects
            .keys()
            .filter_map(|p| p.strip_prefix("/api/v1/namespaces/lab/pods/"))
            .map(str::to_string)
            .collect()
    }
}

fn answer(
    cluster: &Mutex<Cluster>,
    experiment: &Value,
    request: Request<Vec<u8>>,
) -> (StatusCode, Value) {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let body: Value = serde_json::from_slice(request.body()).unwrap_or(Value::Null);
    let mut cluster = cluster.lock().unwrap();
    cluster
        .requests
        .push((method.clone(), path.clone(), body.clone()));
    if let Some(seen) = &cluster.seen {
        let _ = seen.send((method.clone(), path.clone()));
    }
    let not_found = (
        StatusCode::NOT_FOUND,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("{path} not found") }),
    );
    match method.as_str() {
        "GET" if path == "/api/v1/nodes" => (
            StatusCode::OK,
            json!({ "kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": cluster.nodes }),
        ),
        "GET" if path.contains("/experiments/") => (StatusCode::OK, experiment.clone()),
        "GET" => match cluster.objects.get(&path) {
            Some(object) => (StatusCode::OK, object.clone()),
            None => not_found,
        },
        "POST"
            if cluster
                .refuse
                .as_ref()
                .is_some_and(|(suffix, _, _)| path.ends_with(suffix.as_str())) =>
        {
            let (_, code, message) = cluster.refuse.clone().unwrap();
            (
                StatusCode::from_u16(code).unwrap(),
                json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": code, "message": message }),
            )
        }
        "POST" => {
            let name = body["metadata"]["name"].as_str().unwrap().to_string();
            let at = format!("{path}/{name}");
            if cluster.objects.contains_key(&at) {
                return (
                    StatusCode::CONFLICT,
                    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists" }),
                );
            }
            cluster.objects.insert(at, body.clone());
            (StatusCode::CREATED, body)
        }
        "PATCH" | "DELETE" if path.contains("/experiments/") => {
            (StatusCode::OK, experiment.clone())
        }
        "DELETE" => (
            StatusCode::OK,
            json!({ "kind": "Status", "apiVersion": "v1", "status": "Success" }),
        ),
        _ => not_found,
    }
}

/// A client whose API server is `cluster`.
pub fn client_for(cluster: Arc<Mutex<Cluster>>, experiment: &Experiment) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let experiment = serde_json::to_value(experiment).unwrap();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap().to_vec();
            let (status, value) = answer(&cluster, &experiment, Request::from_parts(parts, bytes));
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&value).unwrap()))
                .unwrap();
            respond.send_response(response);
        }
    });
    Client::new(service, "lab")
}
