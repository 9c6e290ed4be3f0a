//! The chart's copy of the CRD is the one the Rust types generate, and every bundled example
//! is a valid experiment.

use std::path::{Path, PathBuf};

use loadlab_controller::crd::{CHART_COPY, crd_yaml};
use loadlab_controller::spec::CohortKind;
use loadlab_controller::{Experiment, parse_experiment};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_charts_crd_is_the_generated_one() {
    let generated = crd_yaml().unwrap();
    let path = repository().join(CHART_COPY);
    if std::env::var_os("LOADLAB_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let stored =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        stored == generated,
        "{CHART_COPY} differs from the Rust types: regenerate it with `cargo run -p loadlab -- crd > {CHART_COPY}`"
    );
}

#[test]
fn every_example_is_a_valid_experiment_or_bisection() {
    let mut seen = 0;
    for entry in std::fs::read_dir(repository().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("\nkind: Bisection\n") {
            loadlab_engine::bisect::parse_bisection(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
            continue;
        }
        let file = parse_experiment(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if file.spec.kind() != CohortKind::Cluster {
            file.require_local().unwrap();
        } else {
            file.spec.require_cluster().unwrap();
            // What kubectl would send: the same document read as the Kubernetes resource.
            let resource: Experiment =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(resource.spec, file.spec, "{}", path.display());
        }
        seen += 1;
    }
    assert!(
        seen >= 2,
        "examples/ should hold the local and the cluster experiment"
    );
}
