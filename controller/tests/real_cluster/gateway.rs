//! The pods' gateway keeps its MAC address while pods come and go. A Linux bridge left to
//! itself takes the lowest address among its ports; when the port it took leaves (a pod
//! deleted, a kernel node removed), every pod still sending to the old address loses its
//! gateway until its ARP entry ages out: 40.7 s measured here, long enough to fail a run and
//! a controller's lease renewal.

use crate::harness::try_run;

/// The bridge `scripts/cluster.sh` makes for the pods (`scripts/cluster/common.sh`).
const BRIDGE: &str = "llcni0";

fn bridge_address() -> String {
    std::fs::read_to_string(format!("/sys/class/net/{BRIDGE}/address"))
        .unwrap_or_else(|e| panic!("{BRIDGE}: {e}: is the cluster up?"))
        .trim()
        .to_string()
}

/// A port with the lowest address there is, as a pod's veth would be with bad luck; removed
/// when dropped, whatever the test met.
struct LowPort(String);

impl LowPort {
    fn plug() -> Self {
        let name = format!("lltest{}", std::process::id() % 10_000);
        let peer = format!("{name}p");
        let port = LowPort(name.clone());
        let (made, said) = try_run(
            "ip",
            &["link", "add", &name, "type", "veth", "peer", "name", &peer],
        );
        assert!(made, "ip link add {name}: {said}");
        for args in [
            vec!["link", "set", name.as_str(), "address", "02:00:00:00:00:01"],
            vec!["link", "set", name.as_str(), "master", BRIDGE, "up"],
        ] {
            let (ok, said) = try_run("ip", &args);
            assert!(ok, "ip {}: {said}", args.join(" "));
        }
        port
    }
}

impl Drop for LowPort {
    fn drop(&mut self) {
        let _ = try_run("ip", &["link", "del", &self.0]);
    }
}

#[test]
#[ignore = "needs cluster, root"]
fn the_pods_gateway_keeps_its_address_when_a_port_comes_and_goes() {
    let before = bridge_address();
    let port = LowPort::plug();
    assert_eq!(bridge_address(), before, "a new port took over the gateway");
    drop(port);
    assert_eq!(bridge_address(), before, "a port leaving moved the gateway");
}
