//! `loadlab crd` and `loadlab controller` from the command line.

use std::process::Command;

#[test]
fn crd_prints_the_charts_definition() {
    let output = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(output.status.success());
    let chart = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../helm/loadlab/crds/experiments.loadlab.dev.yaml"
    ))
    .unwrap();
    assert!(
        output.stdout == chart,
        "`loadlab crd` differs from the chart's copy"
    );
}

#[test]
fn the_controller_without_a_cluster_says_so_in_one_line_and_starts_nothing() {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .args([
            "controller",
            "--image",
            "loadlab:test",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("LOADLAB_TOKEN_KEY", "k".repeat(32))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("KUBECONFIG", home.path().join("missing"))
        .env("HOME", home.path())
        // A database that cannot exist: it must not be reached before the cluster is.
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("no Kubernetes API"), "{stderr}");
    assert!(!stderr.contains("database"), "{stderr}");
}

#[test]
fn the_controller_refuses_a_short_token_key_before_anything_else() {
    let output = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .args(["controller", "--image", "loadlab:test"])
        .env("LOADLAB_TOKEN_KEY", "too-short")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("LOADLAB_TOKEN_KEY") && stderr.contains("at least 32"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("too-short"),
        "the key is never printed: {stderr}"
    );
}
