//! Where a route listens: `IP:PORT` or `:PORT` ([`ListenAddr`]), and the
//! collisions ferry can tell before binding anything: with another route, and
//! with the addresses a node holds for itself ([`ReservedAddr`]: its admin,
//! cluster and gossip ports).
//!
//! The config file (one node, its bind address known) and the admin API (a
//! route for every member, their bind addresses unknown) share these
//! functions: see [`reserved_conflict`].

use std::net::{IpAddr, SocketAddr};

use crate::FieldError;
use crate::route::RouteSpec;

/// Where a route listens, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// An explicit `IP:PORT`.
    Addr(SocketAddr),
    /// `:PORT`: the port on the node's bind address.
    Port(u16),
}

impl ListenAddr {
    /// Parses `IP:PORT` or `:PORT`.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(port) = s.strip_prefix(':') {
            return port.parse().ok().map(ListenAddr::Port);
        }
        s.parse().ok().map(ListenAddr::Addr)
    }

    /// The socket address on a node whose bind address is `bind`.
    pub fn resolve(self, bind: IpAddr) -> SocketAddr {
        match self {
            ListenAddr::Addr(a) => a,
            ListenAddr::Port(p) => SocketAddr::new(bind, p),
        }
    }

    /// The port, whichever the form.
    pub fn port(self) -> u16 {
        match self {
            ListenAddr::Addr(a) => a.port(),
            ListenAddr::Port(p) => p,
        }
    }
}

/// An address a node holds for itself (its admin, cluster or gossip port),
/// on which no route may listen.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReservedAddr {
    pub addr: SocketAddr,
    /// What it is, as a message names it: `the admin address`,
    /// `node n2's cluster address`.
    pub what: String,
}

impl ReservedAddr {
    /// `addr`, described as `what`.
    pub fn new(addr: SocketAddr, what: impl Into<String>) -> Self {
        Self { addr, what: what.into() }
    }
}

/// True when sockets bound to `a` and `b` would collide: the same port
/// (not 0) on the same IP, or on an unspecified IP (`0.0.0.0`, `::`) and any
/// other.
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Why a route listening on `listen` would collide with one of `reserved`,
/// or `None`. `bind` is the bind address of the node that binds it (its own
/// config file), against which `:PORT` resolves. Without it (a route the API
/// is about to give every member, whose bind addresses it does not know)
/// `:PORT` collides with every reserved address of that port: one node or
/// another binds it there.
pub fn reserved_conflict(listen: &str, bind: Option<IpAddr>, reserved: &[ReservedAddr]) -> Option<String> {
    let l = ListenAddr::parse(listen)?;
    let hit = reserved.iter().find(|r| match (l, bind) {
        (ListenAddr::Port(p), None) => p != 0 && r.addr.port() == p,
        (l, Some(bind)) => overlap(l.resolve(bind), r.addr),
        (ListenAddr::Addr(a), None) => overlap(a, r.addr),
    })?;
    Some(format!("{listen:?} collides with {} {}", hit.what, hit.addr))
}

/// Why a new route on `listen` could be bound on no node because of one of
/// `others` (the cluster's other routes), or `None`: the same `IP:PORT`
/// or `:PORT`, or an unspecified IP (`0.0.0.0:PORT`, `[::]:PORT`) on either
/// side and the same port. `:PORT` against a specific `IP:PORT` is left to
/// the nodes: whether they collide depends on each node's bind address.
pub fn cluster_listen_conflict<'a>(
    listen: &str,
    others: impl IntoIterator<Item = &'a RouteSpec>,
) -> Option<String> {
    let l = ListenAddr::parse(listen)?;
    let everywhere = |a: ListenAddr, b: ListenAddr| match (a, b) {
        (ListenAddr::Addr(a), ListenAddr::Addr(b)) => overlap(a, b),
        (ListenAddr::Port(p), ListenAddr::Port(q)) => p == q && p != 0,
        (ListenAddr::Port(p), ListenAddr::Addr(a)) | (ListenAddr::Addr(a), ListenAddr::Port(p)) => {
            p == a.port() && p != 0 && a.ip().is_unspecified()
        }
    };
    others.into_iter().find_map(|other| {
        let o = ListenAddr::parse(&other.listen)?;
        everywhere(l, o).then(|| {
            format!("{listen:?} collides with route {:?} ({:?}) on every node", other.name, other.listen)
        })
    })
}

/// Routes whose listeners would collide on a node that binds `:PORT` on
/// `bind` and holds the `reserved` addresses (its admin, cluster and gossip
/// ports): the same port on the same IP, or on a wildcard IP and any other.
/// Port 0 never collides (the OS picks).
pub fn listen_conflicts(
    routes: &[RouteSpec],
    prefix: &str,
    bind: IpAddr,
    reserved: &[ReservedAddr],
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut seen: Vec<(usize, SocketAddr)> = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let Some(addr) = ListenAddr::parse(&r.listen).map(|l| l.resolve(bind)) else { continue };
        if addr.port() == 0 {
            continue;
        }
        let path = format!("{prefix}[{i}].listen");
        if let Some(msg) = reserved_conflict(&r.listen, Some(bind), reserved) {
            errors.push(FieldError::new(path.clone(), msg));
        }
        match seen.iter().find(|(_, other)| overlap(*other, addr)) {
            Some((j, _)) if routes[*j].listen == r.listen => {
                errors.push(FieldError::new(path, format!("duplicate listen address {:?}", r.listen)))
            }
            Some((j, other)) => errors.push(FieldError::new(
                path,
                format!(
                    "{:?} collides with {prefix}[{j}].listen {:?} ({other})",
                    r.listen, routes[*j].listen
                ),
            )),
            None => seen.push((i, addr)),
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    fn route(name: &str, listen: &str) -> RouteSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "listen": listen,
            "backends": [{"id": "a", "addr": "127.0.0.1:9001"}]
        }))
        .expect("valid route json")
    }

    #[test]
    fn listen_accepts_port_only_form() {
        assert_eq!(ListenAddr::parse(":7000"), Some(ListenAddr::Port(7000)));
        assert!(ListenAddr::parse("7000").is_none());
        assert!(ListenAddr::parse("localhost:7000").is_none());
    }

    /// What the API checks before proposing a route, for every member.
    #[test]
    fn reserved_addresses_collide_by_port_and_ip() {
        let reserved = [
            ReservedAddr::new(addr("127.0.0.2:7948"), "node n2's admin address"),
            ReservedAddr::new(addr("0.0.0.0:7947"), "node n3's cluster address"),
        ];
        let conflict = |listen: &str| reserved_conflict(listen, None, &reserved);
        assert_eq!(
            conflict("127.0.0.2:7948").as_deref(),
            Some("\"127.0.0.2:7948\" collides with node n2's admin address 127.0.0.2:7948")
        );
        // `:PORT` binds on each node's own address: any member's port counts.
        assert!(conflict(":7948").is_some());
        // An unspecified IP on either side overlaps every IP of the port.
        assert!(conflict("0.0.0.0:7948").is_some());
        assert!(conflict("[::]:7948").is_some());
        assert!(conflict("127.0.0.9:7947").is_some());
        assert_eq!(conflict("127.0.0.1:7948"), None, "another IP, same port");
        assert_eq!(conflict(":7000"), None);
        assert_eq!(conflict("nonsense"), None, "invalid listen strings are reported by validate");
        // On the node itself `:PORT` resolves against its bind address.
        let own = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(reserved_conflict(":7948", Some(own), &reserved), None);
        assert!(reserved_conflict(":7947", Some(own), &reserved).is_some());
    }

    #[test]
    fn cluster_listen_conflicts_are_the_ones_every_node_has() {
        let others = [route("web", ":7000"), route("api", "10.0.0.1:7001"), route("any", "0.0.0.0:7002")];
        let conflict = |listen: &str| cluster_listen_conflict(listen, &others);
        assert_eq!(
            conflict("0.0.0.0:7000").as_deref(),
            Some("\"0.0.0.0:7000\" collides with route \"web\" (\":7000\") on every node")
        );
        assert!(conflict(":7000").is_some());
        assert!(conflict("0.0.0.0:7001").is_some());
        assert!(conflict("10.0.0.1:7001").is_some());
        assert!(conflict(":7002").is_some());
        assert!(conflict("127.0.0.1:7002").is_some());
        // Depends on each node's bind address: left to the nodes.
        assert_eq!(conflict(":7001"), None);
        assert_eq!(conflict("10.0.0.1:7000"), None);
        assert_eq!(conflict("10.0.0.2:7001"), None);
    }
}
