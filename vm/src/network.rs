//! The guest's network. With root, a tap device on a bridge inside a network namespace the run
//! creates, joined to this machine by a veth pair: the guest gets an address of its own on a
//! link only this machine is on, so a generator here can load it. Without that, QEMU's
//! user-mode network with `restrict=on`: the guest reaches nothing, and its agent and generator
//! are reached through ports forwarded on 127.0.0.1.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::Error;

/// How the guest is networked, as asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkChoice {
    /// A tap in a namespace when this process may create one, user-mode networking otherwise.
    #[default]
    Auto,
    Tap,
    User,
}

/// Whether this process can create namespaces, bridges and taps.
pub(crate) fn tap_possible() -> bool {
    nix::unistd::Uid::effective().is_root()
        && Path::new("/dev/net/tun").exists()
        && Command::new("ip").arg("-V").output().is_ok()
}

/// A namespace holding a bridge with the guest's tap and one end of a veth pair whose other
/// end, on this machine, carries `host_address`. Removed when dropped.
#[derive(Debug)]
pub(crate) struct TapNetwork {
    pub namespace: String,
    host_link: String,
    pub host_address: Ipv4Addr,
    pub guest_address: Ipv4Addr,
}

/// Subnets 10.233.K.0/24; K is chosen so that no address of this machine is in it.
const SUBNET_PREFIX: [u8; 2] = [10, 233];

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl TapNetwork {
    pub fn create() -> Result<Self, Error> {
        let taken = Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .map_err(|e| Error::Network(format!("ip: {e}")))?;
        let pid = std::process::id();
        let mut last_error = String::new();
        for attempt in 0..250u32 {
            let k = ((pid.wrapping_mul(7) + attempt) % 250 + 1) as u8;
            let prefix = format!("{}.{}.{k}.", SUBNET_PREFIX[0], SUBNET_PREFIX[1]);
            if taken.contains(&prefix) {
                continue;
            }
            let network = Self {
                namespace: format!("loadlab-vm-{pid}-{k}"),
                host_link: format!("llvm{k}h"),
                host_address: Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], k, 1),
                guest_address: Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], k, 2),
            };
            match network.build(k) {
                Ok(()) => return Ok(network),
                // Dropping `network` removes whatever part was made.
                Err(error) => last_error = error,
            }
        }
        Err(Error::Network(format!(
            "could not create the guest's network namespace: {last_error}"
        )))
    }

    fn build(&self, k: u8) -> Result<(), String> {
        let ns = self.namespace.as_str();
        let host = self.host_link.as_str();
        let peer = format!("llvm{k}n");
        let host_cidr = format!("{}/24", self.host_address);
        ip(&["netns", "add", ns])?;
        ip(&[
            "link", "add", host, "type", "veth", "peer", "name", &peer, "netns", ns,
        ])?;
        ip(&["addr", "add", &host_cidr, "dev", host])?;
        ip(&["link", "set", host, "up"])?;
        ip(&["-n", ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", ns, "link", "set", &peer, "master", "br0"])?;
        ip(&["-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap"])?;
        ip(&["-n", ns, "link", "set", "tap0", "master", "br0"])?;
        for link in ["br0", &peer, "tap0", "lo"] {
            ip(&["-n", ns, "link", "set", link, "up"])?;
        }
        Ok(())
    }

    /// QEMU's network arguments; QEMU must run inside the namespace, where the tap is.
    pub(crate) fn qemu_netdev(&self) -> String {
        "tap,id=net0,ifname=tap0,script=no,downscript=no".into()
    }
}

impl Drop for TapNetwork {
    fn drop(&mut self) {
        // Deleting the namespace deletes the bridge, the tap and the veth pair with it.
        let _ = ip(&["netns", "del", &self.namespace]);
        let _ = ip(&["link", "del", &self.host_link]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_network_is_built_and_removed_whole() {
        if !tap_possible() {
            panic!("this test builds network namespaces and needs root, /dev/net/tun and iproute2");
        }
        let network = TapNetwork::create().unwrap();
        let namespace = network.namespace.clone();
        let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(String::from_utf8_lossy(&listed.stdout).contains(&namespace));
        let links = Command::new("ip")
            .args(["-n", &namespace, "-o", "link", "show"])
            .output()
            .unwrap();
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(links.contains("tap0") && links.contains("br0"), "{links}");
        // This machine reaches the guest's subnet through the veth.
        let route = Command::new("ip")
            .args(["route", "get", &network.guest_address.to_string()])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&route.stdout).contains(&network.host_link),
            "{}",
            String::from_utf8_lossy(&route.stdout)
        );
        drop(network);
        let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&listed.stdout).contains(&namespace));
    }
}
