//! The experiment file's parsing and validation, part by part.

use super::*;

const GOOD: &str = r#"
apiVersion: loadlab.dev/v1alpha1
kind: Experiment
metadata: { name: local }
spec:
  target: { nginx: { workers: auto, reuseport: false } }
  load: { connections: 64, warmup: 2s, duration: 10s }
  cohorts:
    - { name: one-worker, local: true, target: { nginx: { workers: 1 } } }
    - { name: two-workers-rp, local: true, target: { nginx: { workers: 2, reuseport: true } } }
  repetitions: 3
  baseline: one-worker
"#;

fn error_of(yaml: &str) -> SpecError {
    parse_experiment(yaml).unwrap_err()
}

#[test]
fn a_good_file_parses_with_overrides_applied() {
    let file = parse_experiment(GOOD).unwrap();
    assert_eq!(file.metadata.name, "local");
    assert_eq!(
        file.spec.load.duration,
        WrittenDuration(Duration::from_secs(10))
    );
    assert_eq!(file.baseline(), "one-worker");
    let rp = file.spec.nginx_for(&file.spec.cohorts[1]);
    assert_eq!(rp.workers, Workers::Count(2));
    assert!(rp.reuseport);
    let one = file.spec.nginx_for(&file.spec.cohorts[0]);
    assert_eq!((one.workers, one.reuseport), (Workers::Count(1), false));
}

#[test]
fn connections_are_made_as_real_clients_make_them_unless_asked_otherwise() {
    let with_load =
        |extra: &str| GOOD.replace("duration: 10s }", &format!("duration: 10s{extra} }}"));
    let plain = parse_experiment(GOOD).unwrap().spec.load;
    assert_eq!(
        (plain.close, plain.handshake_ack),
        (CloseSpec::Fin, HandshakeAckSpec::Separate)
    );
    let lean = parse_experiment(&with_load(", close: reset, handshakeAck: withRequest"))
        .unwrap()
        .spec
        .load;
    assert_eq!(
        (lean.close, lean.handshake_ack),
        (CloseSpec::Reset, HandshakeAckSpec::WithRequest)
    );
    // A wrong value is named beside a value that would do.
    for (wrong, named) in [
        (", close: linger", ["linger", "reset"]),
        (", handshakeAck: never", ["never", "withRequest"]),
    ] {
        let message = error_of(&with_load(wrong)).to_string();
        assert!(named.iter().all(|n| message.contains(n)), "{message}");
    }
}

#[test]
fn the_lock_source_is_auto_unless_named_and_named_ones_are_checked() {
    let with_collect = |collect: &str| {
        GOOD.replace(
            "  repetitions: 3\n",
            &format!("  repetitions: 3\n  collect: {collect}\n"),
        )
    };
    let auto = parse_experiment(&with_collect("{ lockContention: true }")).unwrap();
    assert_eq!(auto.spec.collect.lock_source, LockSourceSpec::Auto);
    let slow = parse_experiment(&with_collect(
        "{ lockContention: true, lockSource: slowPaths }",
    ))
    .unwrap();
    assert_eq!(slow.spec.collect.lock_source, LockSourceSpec::SlowPaths);
    assert_eq!(slow.spec.collect.lock_source.wire_name(), "slow-paths");
    let error = error_of(&with_collect(
        "{ lockContention: true, lockSource: bpftrace }",
    ));
    assert!(error.to_string().contains("lockSource"), "{error}");
}

#[test]
fn auto_repetitions_take_the_stopping_defaults() {
    let auto = parse_experiment(&GOOD.replace("repetitions: 3", "repetitions: auto")).unwrap();
    assert_eq!(auto.spec.repetitions, Repetitions::Auto);
    let (budget, stopping) = auto.spec.rounds();
    assert_eq!(budget, 20);
    assert_eq!(stopping.unwrap().practical_change_percent, 5.0);
    let fixed = parse_experiment(GOOD).unwrap();
    assert_eq!(fixed.spec.rounds(), (3, None));
    // Written back as it was read.
    let again = parse_experiment(&serde_yaml::to_string(&auto).unwrap()).unwrap();
    assert_eq!(again, auto);
}

#[test]
fn the_parsed_file_serializes_back_to_the_same_experiment() {
    let file = parse_experiment(GOOD).unwrap();
    let again = parse_experiment(&serde_yaml::to_string(&file).unwrap()).unwrap();
    assert_eq!(again, file);
}

#[test]
fn vm_cohorts_take_defaults_and_refuse_impossible_machines() {
    let vm = |cohort: &str| {
        format!(
            "apiVersion: loadlab.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: v }}\nspec:\n  target: {{ nginx: {{}} }}\n  load: {{ connections: 8, duration: 1s }}\n  cohorts:\n    - {{ name: a, vm: {cohort} }}\n"
        )
    };
    let file =
        parse_experiment(&vm("{ kernel: linux-image-6.1.0-47-cloud-amd64-unsigned }")).unwrap();
    assert_eq!(file.spec.kind(), CohortKind::Vm);
    file.require_local().unwrap();
    let error = file.spec.require_cluster().unwrap_err();
    assert_eq!(error.field, "spec.cohorts[0].vm");
    let machine = file.spec.cohorts[0].vm.as_ref().unwrap();
    assert_eq!(
        (machine.cpus, machine.memory_mib, machine.accel),
        (2, 2048, Accel::Auto)
    );
    let tcg = parse_experiment(&vm(
        "{ kernel: /boot/vmlinuz, cpus: 1, memoryMiB: 1024, accel: tcg }",
    ))
    .unwrap();
    assert_eq!(tcg.spec.cohorts[0].vm.as_ref().unwrap().accel, Accel::Tcg);
    for (bad, field) in [
        ("{ kernel: '' }", "spec.cohorts[0].vm.kernel"),
        ("{ kernel: k, cpus: 0 }", "spec.cohorts[0].vm.cpus"),
        (
            "{ kernel: k, memoryMiB: 256 }",
            "spec.cohorts[0].vm.memoryMiB",
        ),
        (
            "{ kernel: k, network: user, generator: host }",
            "spec.cohorts[0].vm.generator",
        ),
    ] {
        assert_eq!(error_of(&vm(bad)).field, field, "{bad}");
    }
    let mixed = vm("{ kernel: k } }\n    - { name: b, local: true");
    let error = error_of(&mixed);
    assert!(error.message.contains("cannot be mixed"), "{error}");
    let both = vm("{ kernel: k }, local: true");
    assert!(error_of(&both).message.contains("choose one place"));
}

#[test]
fn unknown_fields_are_named_with_their_path() {
    let error = error_of(&GOOD.replace("duration: 10s", "duration: 10s, burst: 5"));
    assert_eq!(error.field, "spec.load.burst");
    assert!(error.message.contains("unknown field `burst`"), "{error}");
    let error = error_of(&GOOD.replace(
        "{ name: one-worker, local: true",
        "{ name: one-worker, container: {}, local: true",
    ));
    assert_eq!(error.field, "spec.cohorts[0].container");
    assert!(
        error.message.contains("unknown field `container`"),
        "{error}"
    );
}

#[test]
fn impossible_values_are_rejected() {
    for (from, to, field, says) in [
        (
            "duration: 10s",
            "duration: -5s",
            "spec.load.duration",
            "negative",
        ),
        (
            "duration: 10s",
            "duration: 0s",
            "spec.load.duration",
            "longer than zero",
        ),
        (
            "duration: 10s",
            "duration: 10",
            "spec.load.duration",
            "unit",
        ),
        (
            "duration: 10s",
            "duration: 2d",
            "spec.load.duration",
            "unknown unit",
        ),
        ("warmup: 2s", "warmup: 2h", "spec.load.warmup", "at most"),
        (
            "connections: 64",
            "connections: 0",
            "spec.load.connections",
            "between",
        ),
        (
            "connections: 64",
            "connections: -1",
            "spec.load.connections",
            "expected u32",
        ),
        (
            "repetitions: 3",
            "repetitions: 0",
            "spec.repetitions",
            "a number from 1 to 1000",
        ),
        (
            "repetitions: 3",
            "repetitions: often",
            "spec.repetitions",
            "expected `auto`",
        ),
        (
            "repetitions: 3",
            "repetitions: 3\n  stopping: { maxRepetitions: 10 }",
            "spec.stopping",
            "repetitions: auto only",
        ),
        (
            "repetitions: 3",
            "repetitions: auto\n  stopping: { maxRepetitions: 2 }",
            "spec.stopping.maxRepetitions",
            "between 3 and 1000",
        ),
        (
            "repetitions: 3",
            "repetitions: auto\n  stopping: { practicalChangePercent: 0 }",
            "spec.stopping.practicalChangePercent",
            "between 0.1 and 50",
        ),
        (
            "baseline: one-worker",
            "baseline: nope",
            "spec.baseline",
            "not a cohort",
        ),
        (
            "workers: auto",
            "workers: many",
            "spec.target.nginx.workers",
            "expected `auto`",
        ),
        (
            "workers: 1 }",
            "workers: 0 }",
            "spec.cohorts[0].target.nginx.workers",
            "1 to 1024",
        ),
        (
            "name: local",
            "name: Local_Exp",
            "metadata.name",
            "lowercase",
        ),
        (
            "name: two-workers-rp",
            "name: one-worker",
            "spec.cohorts[1].name",
            "another cohort",
        ),
        (
            "{ name: one-worker, local: true,",
            "{ name: one-worker,",
            "spec.cohorts[0]",
            "local: true",
        ),
        (
            "kind: Experiment",
            "kind: Job",
            "kind",
            "expected Experiment",
        ),
        (
            "repetitions: 3",
            "repetitions: 3\n  collect: { kernelSymbols: [tcp_v4_connect, \"x; rm\"] }",
            "spec.collect.kernelSymbols[1]",
            "not a kernel symbol name",
        ),
    ] {
        assert!(GOOD.contains(from), "{from}");
        let error = error_of(&GOOD.replace(from, to));
        assert_eq!(error.field, field, "{to}: {error}");
        assert!(error.message.contains(says), "{to}: {error}");
    }
}

#[test]
fn kernel_symbols_to_probe_are_read() {
    let file = parse_experiment(&GOOD.replace(
        "repetitions: 3",
        "repetitions: 3\n  collect: { kernelSymbols: [tcp_v4_connect, inet_csk_accept] }",
    ))
    .unwrap();
    assert_eq!(
        file.spec.collect.kernel_symbols,
        ["tcp_v4_connect", "inet_csk_accept"]
    );
}

#[test]
fn broken_yaml_and_missing_fields_are_clear() {
    let error = error_of("apiVersion: [");
    assert!(!error.message.is_empty());
    let error = error_of(&GOOD.replace(
        "  load: { connections: 64, warmup: 2s, duration: 10s }\n",
        "",
    ));
    assert!(error.message.contains("missing field `load`"), "{error}");
}

#[test]
fn cluster_cohorts_select_nodes_and_are_refused_by_a_local_run() {
    let cluster = GOOD
        .replace(
            "local: true, target: { nginx: { workers: 1 } }",
            "kernel: \"6.1.0-47-*\"",
        )
        .replace(
            "local: true, target: { nginx: { workers: 2, reuseport: true } }",
            "nodeSelector: { hw: big }, nodeNames: [n1]",
        );
    let file = parse_experiment(&cluster).unwrap();
    assert_eq!(file.spec.kind(), CohortKind::Cluster);
    assert_eq!(file.spec.cohorts[0].kernel.as_deref(), Some("6.1.0-47-*"));
    assert_eq!(file.spec.cohorts[1].node_names, vec!["n1".to_string()]);
    file.spec.require_cluster().unwrap();
    let error = file.require_local().unwrap_err();
    assert_eq!(error.field, "spec.cohorts[0]");
    assert!(error.message.contains("kubectl apply"), "{error}");

    let local = parse_experiment(GOOD).unwrap();
    let error = local.spec.require_cluster().unwrap_err();
    assert_eq!(error.field, "spec.cohorts[0].local");

    let mixed = GOOD.replace(
        "local: true, target: { nginx: { workers: 2, reuseport: true } }",
        "kernel: \"6.*\"",
    );
    let error = error_of(&mixed);
    assert_eq!(error.field, "spec.cohorts[1]");
    assert!(error.message.contains("mixed"), "{error}");

    let both = GOOD.replace(
        "local: true, target: { nginx: { workers: 1 } }",
        "local: true, kernel: x",
    );
    assert!(
        error_of(&both).message.contains("choose one place"),
        "{}",
        error_of(&both)
    );
    let spaced = cluster.replace("\"6.1.0-47-*\"", "\"6.1 47\"");
    assert_eq!(error_of(&spaced).field, "spec.cohorts[0].kernel");
}

#[test]
fn host_cohorts_name_their_agents_and_need_generators() {
    let hosts = GOOD
        .replace(
            "local: true, target: { nginx: { workers: 1 } }",
            "nodes: [\"10.77.0.2:7700\", \"[fd00::2]:7700\"]",
        )
        .replace(
            "local: true, target: { nginx: { workers: 2, reuseport: true } }",
            "nodes: [\"host-b:7700\"]",
        );
    let with_generators = format!("{hosts}  generators: [\"10.77.0.9:7701\"]\n");
    let file = parse_experiment(&with_generators).unwrap();
    assert_eq!(file.spec.kind(), CohortKind::Hosts);
    file.require_local().unwrap();
    assert!(file.spec.require_cluster().is_err());
    assert_eq!(file.spec.cohorts[0].nodes.len(), 2);

    assert_eq!(error_of(&hosts).field, "spec.generators");
    let bad = with_generators.replace("host-b:7700", "host-b");
    assert_eq!(error_of(&bad).field, "spec.cohorts[1].nodes[0]");
    let bad = with_generators.replace("10.77.0.9:7701", "10.77.0.9:0");
    assert_eq!(error_of(&bad).field, "spec.generators[0]");
    let stray = format!("{GOOD}  generators: [\"10.77.0.9:7701\"]\n");
    assert!(
        error_of(&stray).message.contains("agent hosts"),
        "{}",
        error_of(&stray)
    );
}

#[test]
fn spans_read_and_print() {
    assert_eq!(
        WrittenDuration::parse("500ms").unwrap(),
        WrittenDuration(Duration::from_millis(500))
    );
    assert_eq!(
        WrittenDuration::parse("1.5s").unwrap(),
        WrittenDuration(Duration::from_millis(1500))
    );
    assert_eq!(
        WrittenDuration::parse("2m").unwrap(),
        WrittenDuration(Duration::from_secs(120))
    );
    assert_eq!(
        WrittenDuration(Duration::from_millis(1500)).to_string(),
        "1500ms"
    );
    assert_eq!(WrittenDuration(Duration::from_secs(10)).to_string(), "10s");
    assert!(WrittenDuration::parse("s").is_err());
}

/// The spec's schema as the API server gets it.
fn spec_schema() -> serde_json::Value {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(Experiment::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

#[test]
fn the_crd_schema_carries_the_limits_the_controller_checks() {
    let spec = spec_schema();
    let load = &spec["properties"]["load"];
    let connections = &load["properties"]["connections"];
    assert_eq!(
        (
            connections["minimum"].as_f64(),
            connections["maximum"].as_f64()
        ),
        (Some(1.0), Some(f64::from(MAX_CONNECTIONS)))
    );
    let stopping = &spec["properties"]["stopping"]["properties"];
    assert_eq!(
        stopping["maxRepetitions"]["maximum"].as_f64(),
        Some(f64::from(MAX_REPETITIONS))
    );
    assert_eq!(
        spec["properties"]["cohorts"]["maxItems"].as_u64(),
        Some(MAX_COHORTS as u64)
    );
    let rules = |schema: &serde_json::Value| -> Vec<String> {
        schema["x-kubernetes-validations"]
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| r["rule"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    for rule in [IMMUTABLE_SPEC, BASELINE_IS_A_COHORT, COHORT_NAMES_UNIQUE] {
        assert!(rules(&spec).contains(&rule.to_string()), "{rule}");
    }
    for rule in [
        DURATION_IN_RANGE,
        WARMUP_IN_RANGE,
        GENERATORS_AT_MOST_CONNECTIONS,
        RATE_IN_RANGE,
    ] {
        assert!(rules(load).contains(&rule.to_string()), "{rule}");
    }
    let workers = &spec["properties"]["target"]["properties"]["nginx"]["properties"]["workers"];
    assert!(
        rules(workers).contains(&WORKERS_VALID.to_string()),
        "{workers}"
    );
    let repetitions = &spec["properties"]["repetitions"];
    assert!(
        rules(repetitions).contains(&REPETITIONS_VALID.to_string()),
        "{repetitions}"
    );
}

#[test]
fn lists_past_their_limits_are_refused_with_the_field() {
    let spec = |cohort: &str| {
        format!(
            "apiVersion: loadlab.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: x }}\nspec:\n  target: {{ nginx: {{ workers: 1 }} }}\n  load: {{ connections: 8, duration: 1s }}\n  cohorts:\n    - {cohort}\n"
        )
    };
    let names: Vec<String> = (0..=MAX_NODES_PER_COHORT)
        .map(|i| format!("n{i}"))
        .collect();
    let too_many_names = spec(&format!("{{ name: a, nodeNames: [{}] }}", names.join(", ")));
    let error = parse_experiment(&too_many_names).unwrap_err().to_string();
    assert!(
        error.contains("spec.cohorts[0].nodeNames: at most 1000"),
        "{error}"
    );
    let many_cohorts: String = (0..=MAX_COHORTS)
        .map(|i| format!("{{ name: c{i}, local: true }}"))
        .collect::<Vec<_>>()
        .join("\n    - ");
    let error = parse_experiment(&spec(&many_cohorts))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("spec.cohorts: at most 64 cohorts"),
        "{error}"
    );
}
