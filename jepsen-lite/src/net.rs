//! The suite's hosts: one network namespace per `ferryd`, each attached by a
//! veth pair to a bridge that lives in a namespace of its own, which the
//! suite itself enters to talk to the nodes. Addresses come from
//! 10.213.7.0/24 and exist only inside these namespaces: the host's own
//! network is never touched.
//!
//! Faults are iptables rules inside the node namespaces: a *grudge* maps each
//! node to the nodes whose packets it drops (`INPUT -s IP -j DROP`), and
//! packet loss drops them at random (`-m statistic --mode random
//! --probability P`; `tc netem` is not in every kernel); healing flushes
//! them.
//!
//! Names carry the suite's PID (`fjl<pid>-br`, `fjl<pid>-n3`) so a later run
//! can tell a crashed run's leftovers (PID gone) from a live run and remove
//! them. Everything is removed on drop (also when unwinding from a panic).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Prefix of every namespace the suite creates.
const PREFIX: &str = "fjl";
/// The suite's private range: node i is 10.213.7.i, the suite 10.213.7.254.
const SUBNET: [u8; 3] = [10, 213, 7];
/// The suite's own address, on the bridge.
pub const CONTROL_HOST: u8 = 254;
/// Most nodes (addresses .1 ..= .200).
pub const MAX_NODES: usize = 200;

/// Node index (1-based) → the nodes whose packets it drops.
pub type Grudge = BTreeMap<usize, BTreeSet<usize>>;

/// What the suite needs from the machine.
#[derive(Debug, thiserror::Error)]
pub enum PrereqError {
    #[error("jepsen-lite needs root (network namespaces and iptables); run it as root, e.g. with sudo")]
    NotRoot,
    #[error("`{0}` not found: install it with `ops/jepsen-deps.sh` (iproute2, iptables)")]
    Missing(&'static str),
}

/// Checks that the suite can build its network: root, `ip` and `iptables`.
pub fn check_prereqs() -> Result<(), PrereqError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(PrereqError::NotRoot);
    }
    for tool in ["ip", "iptables"] {
        let found = Command::new(tool).arg("-V").output().is_ok_and(|o| o.status.success());
        if !found {
            return Err(PrereqError::Missing(tool));
        }
    }
    Ok(())
}

/// Runs `cmd args`, failing with its stderr.
fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Runs `args` inside namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Namespace names of this machine.
fn namespaces() -> Result<Vec<String>> {
    let out = Command::new("ip").args(["netns", "list"]).output().context("ip netns list")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The PID in a name `fjl<pid>-…`, if it is one of ours.
fn owner_pid(ns: &str) -> Option<i32> {
    ns.strip_prefix(PREFIX)?.split_once('-')?.0.parse().ok()
}

/// Removes the namespaces of earlier runs whose process is gone; returns
/// their names.
pub fn clear_leftovers() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for ns in namespaces()? {
        let Some(pid) = owner_pid(&ns) else { continue };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            run("ip", &["netns", "del", &ns])?;
            removed.push(ns);
        }
    }
    Ok(removed)
}

/// The address of node `i` (1-based), or of the suite for [`CONTROL_HOST`].
pub fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], u8::try_from(i).unwrap_or(u8::MAX))
}

/// The namespaces of one run. Dropping it removes them all.
#[derive(Debug)]
pub struct Net {
    tag: String,
    nodes: BTreeSet<usize>,
}

impl Net {
    /// Creates the bridge namespace and `nodes` node namespaces (1 ..= nodes).
    pub fn create(nodes: usize) -> Result<Self> {
        if nodes == 0 || nodes > MAX_NODES {
            bail!("--nodes must be 1 to {MAX_NODES}, got {nodes}");
        }
        let net = Net { tag: format!("{PREFIX}{}", std::process::id()), nodes: BTreeSet::new() };
        let br = net.bridge();
        run("ip", &["netns", "add", &br])?;
        in_ns(&br, &["ip", "link", "set", "lo", "up"])?;
        in_ns(&br, &["ip", "link", "add", "br0", "type", "bridge"])?;
        in_ns(&br, &["ip", "addr", "add", &format!("{}/24", ip(usize::from(CONTROL_HOST))), "dev", "br0"])?;
        in_ns(&br, &["ip", "link", "set", "br0", "up"])?;
        let mut net = net;
        for i in 1..=nodes {
            net.add_node(i)?;
        }
        Ok(net)
    }

    /// The bridge namespace, where the suite itself runs its clients.
    pub fn bridge(&self) -> String {
        format!("{}-br", self.tag)
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.tag)
    }

    /// The nodes that have a namespace.
    pub fn nodes(&self) -> impl Iterator<Item = usize> + '_ {
        self.nodes.iter().copied()
    }

    /// Creates node `i`'s namespace and plugs it into the bridge (used at
    /// start and by the membership nemesis for nodes that join later).
    pub fn add_node(&mut self, i: usize) -> Result<()> {
        if i == 0 || i > MAX_NODES {
            bail!("node index {i} outside 1 ..= {MAX_NODES}");
        }
        let (br, ns, veth) = (self.bridge(), self.ns(i), format!("v{i}"));
        run("ip", &["netns", "add", &ns])?;
        self.nodes.insert(i);
        in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
        in_ns(&br, &["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
        in_ns(&br, &["ip", "link", "set", &veth, "master", "br0"])?;
        in_ns(&br, &["ip", "link", "set", &veth, "up"])?;
        in_ns(&ns, &["ip", "addr", "add", &format!("{}/24", ip(i)), "dev", "eth0"])?;
        in_ns(&ns, &["ip", "link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// Moves the calling thread into the bridge namespace: sockets it (and
    /// threads it spawns later) opens reach the nodes. Call it before
    /// starting the async runtime.
    pub fn enter_bridge(&self) -> Result<()> {
        let path = format!("/var/run/netns/{}", self.bridge());
        let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).context("entering the bridge namespace")
    }

    /// Installs `grudge` (after clearing any earlier one): node `a` drops
    /// every packet from each node in `grudge[a]`.
    pub fn partition(&self, grudge: &Grudge) -> Result<()> {
        self.heal()?;
        for (&node, enemies) in grudge {
            for &enemy in enemies {
                in_ns(
                    &self.ns(node),
                    &["iptables", "-A", "INPUT", "-s", &ip(enemy).to_string(), "-j", "DROP"],
                )?;
            }
        }
        Ok(())
    }

    /// Installs random packet loss (after clearing earlier rules): node `a`
    /// drops each packet from each node in `links[a]` with probability `p`.
    pub fn lossy(&self, links: &Grudge, p: f64) -> Result<()> {
        self.heal()?;
        for (&node, froms) in links {
            for &from in froms {
                let rule = loss_rule(from, p)?;
                let mut args = vec!["iptables"];
                args.extend(rule.iter().map(String::as_str));
                in_ns(&self.ns(node), &args)?;
            }
        }
        Ok(())
    }

    /// Removes every fault rule.
    pub fn heal(&self) -> Result<()> {
        for i in &self.nodes {
            in_ns(&self.ns(*i), &["iptables", "-F", "INPUT"])?;
        }
        Ok(())
    }

    /// Removes every namespace of this run (their veths go with them).
    pub fn destroy(&mut self) {
        for i in std::mem::take(&mut self.nodes) {
            let _ = run("ip", &["netns", "del", &self.ns(i)]);
        }
        let _ = run("ip", &["netns", "del", &self.bridge()]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// The iptables arguments that drop each packet from node `from` with
/// probability `p` (0 < p < 1).
pub fn loss_rule(from: usize, p: f64) -> Result<Vec<String>> {
    if !(p > 0.0 && p < 1.0) {
        bail!("packet loss probability must be between 0 and 1 (exclusive), got {p}");
    }
    Ok(["-A", "INPUT", "-s", &ip(from).to_string(), "-m", "statistic", "--mode", "random", "--probability"]
        .iter()
        .map(|s| (*s).to_string())
        .chain([format!("{p:.2}"), "-j".into(), "DROP".into()])
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_rules_use_the_statistic_match() -> Result<()> {
        assert_eq!(
            loss_rule(2, 0.2)?.join(" "),
            "-A INPUT -s 10.213.7.2 -m statistic --mode random --probability 0.20 -j DROP"
        );
        assert!(loss_rule(2, 1.0).is_err() && loss_rule(2, 0.0).is_err() && loss_rule(2, f64::NAN).is_err());
        Ok(())
    }

    #[test]
    fn names_carry_the_owner_pid() {
        assert_eq!(owner_pid("fjl1234-br"), Some(1234));
        assert_eq!(owner_pid("fjl77-n12"), Some(77));
        assert_eq!(owner_pid("fjlx-n1"), None);
        assert_eq!(owner_pid("other-ns"), None);
        assert_eq!(ip(3).to_string(), "10.213.7.3");
    }
}

#[cfg(test)]
mod root_tests {
    use super::*;

    /// Moves the calling thread into `ns`.
    fn enter(ns: &str) -> Result<()> {
        let f = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
        Ok(nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?)
    }

    #[test]
    fn nodes_reach_each_other_until_partitioned() -> Result<()> {
        if check_prereqs().is_err() {
            eprintln!("skipped: not root or no ip/iptables");
            return Ok(());
        }
        let net = Net::create(2)?;
        let (n1, n2, br) = (net.ns(1), net.ns(2), net.bridge());
        let listener = std::thread::spawn(move || -> Result<std::net::TcpListener> {
            enter(&n1)?;
            Ok(std::net::TcpListener::bind((ip(1), 7000))?)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread"))??;
        let connect = |ns: String| {
            std::thread::spawn(move || -> Result<bool> {
                enter(&ns)?;
                let addr = std::net::SocketAddr::from((ip(1), 7000));
                Ok(std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300)).is_ok())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread"))?
        };
        assert!(connect(n2.clone())?, "n2 reaches n1");
        assert!(connect(br.clone())?, "the suite reaches n1");
        net.partition(&Grudge::from([(1, BTreeSet::from([2]))]))?;
        assert!(!connect(n2.clone())?, "n1 drops n2");
        assert!(connect(br.clone())?, "the suite still reaches n1");
        net.heal()?;
        assert!(connect(n2.clone())?, "healed");
        net.lossy(&Grudge::from([(1, BTreeSet::from([2]))]), 0.25)?;
        let rules =
            Command::new("ip").args(["netns", "exec", &net.ns(1), "iptables", "-S", "INPUT"]).output()?;
        let rules = String::from_utf8_lossy(&rules.stdout);
        assert!(
            rules.contains("-s 10.213.7.2/32 -m statistic --mode random --probability 0.25")
                && rules.contains("DROP"),
            "{rules}"
        );
        net.heal()?;
        assert!(connect(n2)?, "healed");
        drop(listener);
        let names = net.nodes().map(|i| net.ns(i)).chain([net.bridge()]).collect::<Vec<_>>();
        drop(net);
        let left = namespaces()?;
        assert!(names.iter().all(|n| !left.contains(n)), "namespaces left behind: {left:?}");
        Ok(())
    }
}
