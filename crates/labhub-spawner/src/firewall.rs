//! The host firewall rules that keep users' servers off the host and the networks around it.
//!
//! A packet from a server takes one of two paths through the host's netfilter, so there are
//! rules on both:
//! - **To an address of the host itself** (the bridge's gateway, the host's LAN address: where
//!   Postgres, the hub's port or a Docker TCP socket may listen) it is delivered locally,
//!   through `INPUT`. One rule there rejects every *new* connection arriving on the bridge's
//!   interface. Replies to connections the hub opened to a server are `ESTABLISHED` and pass;
//!   DNS is answered by Docker's resolver inside the server's own network namespace. When the
//!   hub serves its single-user API on the bridge's gateway, one rule above it accepts new
//!   connections to exactly that address and port, and nothing else of the host.
//! - **To any other address** it is forwarded, through `FORWARD`, whose first stop is Docker's
//!   `DOCKER-USER` chain. A jump there sends whatever arrives from the bridge to a chain of
//!   ours, `LABHUB-<bridge>`, which lets replies pass (`ESTABLISHED`/`RELATED`: something
//!   else opened the connection), then DNS, then the private ranges the site allows, and
//!   rejects link-local addresses (the cloud metadata service) and the private ranges (the
//!   site's LAN, an external database). What it lets pass goes on to Docker's own rules (the
//!   internet, or nothing on an internal network). Traffic between two servers of the bridge
//!   is forwarded too, and Docker drops it (ICC off) whatever our chain says.
//!
//! DNS (port 53) passes to the host's own name servers (`docker.dns_servers`, by default those
//! of `/etc/resolv.conf`) because Docker's embedded resolver asks them *from the container's
//! namespace* (unless they are on loopback), and a cloud's name server is usually private (a
//! VPC's `.2`) or link-local (169.254.169.254 on GCP, .253 on AWS). Port 53 there is DNS only,
//! not the metadata API (port 80). Port 53 of every other private or link-local address is
//! refused like the rest of the range: a resolver is not a way into the site's network.
//!
//! Rejected as "administratively prohibited", not silently dropped: a notebook's connection
//! fails at once ("no route to host") instead of hanging.
//!
//! [`Firewall::enforce`] is idempotent and repairs: each rule is looked for with `iptables -C`,
//! and what a firewall reload removed is added again; our chain is rebuilt when a rule of it
//! is missing or one too many. The rebuild flushes it first, so for that instant the chain
//! lets everything pass — only ever after its rules were found missing already.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Output;

use tokio::process::Command;

use crate::config::DockerConfig;
use crate::ranges::{LINK_LOCAL, PRIVATE, PrivateRange};

/// The host's name servers as Docker's resolver uses them: those of `/etc/resolv.conf`, or,
/// when it names only loopback (systemd-resolved's stub), the stub's upstream list. Loopback
/// ones are asked from the host's namespace, never from a container's, so they need no rule.
fn host_resolvers() -> Vec<Ipv4Addr> {
    let read = |path: &str| resolvers_in(&std::fs::read_to_string(path).unwrap_or_default());
    let listed = read("/etc/resolv.conf");
    if listed.is_empty() { read("/run/systemd/resolve/resolv.conf") } else { listed }
}

/// The non-loopback IPv4 `nameserver` lines of a resolv.conf.
fn resolvers_in(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback())
        .collect()
}

/// Docker's chain for the site's own forwarding rules, consulted before Docker's.
const DOCKER_USER: &str = "DOCKER-USER";

/// Why the rules could not be put in place or checked, in words for an admin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct FirewallError(String);

/// The rules for one users' bridge.
#[derive(Debug, Clone)]
pub(crate) struct Firewall {
    command: PathBuf,
    bridge: String,
    allow: Vec<PrivateRange>,
    /// The name servers port 53 may reach.
    dns: Vec<Ipv4Addr>,
    /// The hub's single-user API on the bridge's gateway, which servers may connect to.
    hub_api: Option<SocketAddrV4>,
    /// Whose exception it is (several hubs may share a bridge: Swarm's `docker_gwbridge`).
    hub_id: String,
}

/// The comment of the single-user API's exception before it named its hub.
const LEGACY_EXCEPTION: &str = "labhub: the hub's single-user API";

/// One rule: its chain and its match and target, as `iptables` takes them after the chain.
type Rule = Vec<String>;

fn words(w: &[&str]) -> Rule {
    w.iter().map(|s| s.to_string()).collect()
}

impl Firewall {
    /// The rules `config` asks for on the bridge interface `bridge`, letting servers reach
    /// `hub_api` (the hub's single-user API) when given.
    pub(crate) fn new(config: &DockerConfig, bridge: &str, hub_api: Option<SocketAddrV4>) -> Self {
        Self {
            command: config.iptables.clone(),
            bridge: bridge.to_string(),
            allow: config.allow_private.clone(),
            dns: config.dns_servers.clone().unwrap_or_else(host_resolvers),
            hub_api,
            hub_id: config.hub_id.as_str().to_string(),
        }
    }

    /// Our chain: `LABHUB-` and the bridge's name (at most 15 characters), within iptables'
    /// 28 for a chain name.
    fn chain(&self) -> String {
        format!("LABHUB-{}", self.bridge)
    }

    /// `INPUT`: no new connection from a server to the host itself.
    fn host_rule(&self) -> Rule {
        words(&[
            "-i",
            &self.bridge,
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "labhub: user servers may not open connections to the host",
            "-j",
            "REJECT",
        ])
    }

    /// `INPUT`, above the host rule: new connections to the hub's single-user API, exactly
    /// its address and port.
    fn hub_api_rule(&self) -> Option<Rule> {
        Some(self.exception(self.hub_api?))
    }

    /// The comment that marks this hub's exceptions.
    fn exception_comment(&self) -> String {
        format!("labhub: the single-user API of hub {}", self.hub_id)
    }

    /// The exception for `api`, with this hub's comment.
    fn exception(&self, api: SocketAddrV4) -> Rule {
        self.exception_marked(api, &self.exception_comment())
    }

    /// The exception for `api` with `comment`.
    fn exception_marked(&self, api: SocketAddrV4, comment: &str) -> Rule {
        words(&[
            "-i",
            &self.bridge,
            "-d",
            &format!("{}/32", api.ip()),
            "-p",
            "tcp",
            "--dport",
            &api.port().to_string(),
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            comment,
            "-j",
            "ACCEPT",
        ])
    }

    /// This hub's exceptions on the bridge for another address or port than `hub_api`'s (an
    /// earlier run's: the port or the gateway changed), as `iptables -S INPUT` lists them.
    /// Those made before exceptions named their hub count too (only a hub's own users'
    /// bridge had one then).
    async fn stale_exceptions(&self) -> Result<Vec<Rule>, FirewallError> {
        let ours = self.exception_comment();
        let bridge = format!("-i {} ", self.bridge);
        let mut stale = Vec::new();
        for line in self.list("INPUT").await?.unwrap_or_default() {
            // `iptables -S` prints a comment's apostrophe escaped.
            let line = line.replace("\\'", "'");
            let comment = [ours.as_str(), LEGACY_EXCEPTION].into_iter().find(|c| line.contains(&format!("\"{c}\"")));
            let Some(comment) = comment.filter(|_| line.contains(&bridge)) else { continue };
            let field = |flag: &str| line.split(flag).nth(1)?.split_whitespace().next().map(str::to_string);
            let ip = field("-d ").and_then(|d| d.trim_end_matches("/32").parse::<Ipv4Addr>().ok());
            let port = field("--dport ").and_then(|p| p.parse::<u16>().ok());
            if let (Some(ip), Some(port)) = (ip, port) {
                let listed = SocketAddrV4::new(ip, port);
                if Some(listed) != self.hub_api || comment == LEGACY_EXCEPTION {
                    stale.push(self.exception_marked(listed, comment));
                }
            }
        }
        Ok(stale)
    }

    /// `DOCKER-USER`: everything forwarded from the bridge goes through our chain.
    fn jump_rule(&self) -> Rule {
        words(&["-i", &self.bridge, "-m", "comment", "--comment", "labhub: user servers", "-j", &self.chain()])
    }

    /// Our chain, in order: replies, DNS, allowed ranges, then the refused ones.
    fn chain_rules(&self) -> Vec<Rule> {
        let comment = |text: &str| words(&["-m", "comment", "--comment", text]);
        let mut rules = vec![
            [
                words(&["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]),
                comment("labhub: replies pass"),
                words(&["-j", "RETURN"]),
            ]
            .concat(),
        ];
        for server in &self.dns {
            let to = format!("{server}/32");
            for proto in ["udp", "tcp"] {
                rules.push(
                    [
                        words(&["-d", &to, "-p", proto, "--dport", "53"]),
                        comment("labhub: DNS"),
                        words(&["-j", "RETURN"]),
                    ]
                    .concat(),
                );
            }
        }
        for range in &self.allow {
            let net = range.net().to_string();
            rules.push(
                [words(&["-d", &net]), comment("labhub: allowed by docker.allow_private"), words(&["-j", "RETURN"])]
                    .concat(),
            );
        }
        let refuse = |net: String, why: &str| {
            [words(&["-d", &net]), comment(why), words(&["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"])]
                .concat()
        };
        rules.push(refuse(LINK_LOCAL.to_string(), "labhub: link-local, the cloud metadata service"));
        for net in PRIVATE {
            rules.push(refuse(net.to_string(), "labhub: private range"));
        }
        rules
    }

    /// Puts every rule in place, adding what is missing; returns what had to be added.
    pub(crate) async fn enforce(&self) -> Result<Vec<String>, FirewallError> {
        let mut added = Vec::new();
        let host = self.host_rule();
        let api = self.hub_api_rule();
        if !self.has("INPUT", &host).await? {
            // The exception must stay above the rule it excepts from: a missing host rule is
            // put back below it by taking the exception out and inserting it again on top.
            if let Some(api) = &api {
                self.delete_all("INPUT", api).await?;
            }
            self.run_ok(&["-I", "INPUT"], &host).await?;
            added.push("the rule that keeps servers off the host (INPUT)".to_string());
        }
        for old in self.stale_exceptions().await? {
            self.delete_all("INPUT", &old).await?;
        }
        if let Some(api) = &api
            && self.ensure_rule("INPUT", api).await?
        {
            added.push("the exception for the hub's single-user API (INPUT)".to_string());
        }
        if self.list(DOCKER_USER).await?.is_none() {
            return Err(FirewallError(format!(
                "the {DOCKER_USER} chain does not exist, so forwarded traffic cannot be filtered: Docker creates it \
                 when it manages iptables (its \"iptables\" setting on), with the iptables that docker.iptables \
                 names ({})",
                self.command.display()
            )));
        }
        let chain = self.chain();
        if self.ensure_chain(&chain).await? {
            added.push(format!("the rules for link-local and private ranges ({chain})"));
        }
        if self.ensure_rule(DOCKER_USER, &self.jump_rule()).await? {
            added.push(format!("the jump from {DOCKER_USER} to {chain}"));
        }
        Ok(added)
    }

    /// Deletes every rule of ours for the bridge (all copies); absent rules are fine.
    pub(crate) async fn remove(&self) -> Result<(), FirewallError> {
        let chain = self.chain();
        // A jump can only exist while its chain does (asking about one without is an error).
        if self.list(&chain).await?.is_some() {
            while self.has(DOCKER_USER, &self.jump_rule()).await? {
                self.run_ok(&["-D", DOCKER_USER], &self.jump_rule()).await?;
            }
            self.run_ok(&["-F", &chain], &[]).await?;
            self.run_ok(&["-X", &chain], &[]).await?;
        }
        self.remove_exception().await?;
        self.delete_all("INPUT", &self.host_rule()).await
    }

    /// Deletes this hub's exceptions for its single-user API alone (every copy, any address).
    pub(crate) async fn remove_exception(&self) -> Result<(), FirewallError> {
        if let Some(api) = self.hub_api_rule() {
            self.delete_all("INPUT", &api).await?;
        }
        for old in self.stale_exceptions().await? {
            self.delete_all("INPUT", &old).await?;
        }
        Ok(())
    }

    /// Deletes every copy of `rule` from `chain`.
    async fn delete_all(&self, chain: &str, rule: &Rule) -> Result<(), FirewallError> {
        while self.has(chain, rule).await? {
            self.run_ok(&["-D", chain], rule).await?;
        }
        Ok(())
    }

    /// Inserts `rule` at the top of `chain` unless it is there; true when it was added.
    async fn ensure_rule(&self, chain: &str, rule: &Rule) -> Result<bool, FirewallError> {
        if self.has(chain, rule).await? {
            return Ok(false);
        }
        self.run_ok(&["-I", chain], rule).await?;
        Ok(true)
    }

    /// Creates our chain or rebuilds it unless it holds exactly its rules; true when it changed.
    async fn ensure_chain(&self, chain: &str) -> Result<bool, FirewallError> {
        let rules = self.chain_rules();
        let listed = match self.list(chain).await? {
            Some(lines) => lines,
            None => {
                let out = self.run(&["-N", chain], &[]).await?;
                // Another hub (or a concurrent start) may have created it since we looked:
                // "Chain already exists" is the state we want.
                if !out.status.success() && self.list(chain).await?.is_none() {
                    return Err(self.failed(&["-N", chain], &out));
                }
                Vec::new()
            }
        };
        let mut intact = listed.iter().filter(|l| l.starts_with("-A ")).count() == rules.len();
        for rule in &rules {
            if !intact {
                break;
            }
            intact = self.has(chain, rule).await?;
        }
        if intact {
            return Ok(false);
        }
        self.run_ok(&["-F", chain], &[]).await?;
        for rule in &rules {
            self.run_ok(&["-A", chain], rule).await?;
        }
        Ok(true)
    }

    /// Whether `rule` is in `chain` (`iptables -C`: 0 yes, 1 no, anything else a failure).
    async fn has(&self, chain: &str, rule: &Rule) -> Result<bool, FirewallError> {
        let out = self.run(&["-C", chain], rule).await?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(self.failed(&["-C", chain], &out)),
        }
    }

    /// The rules of `chain` as `iptables -S` prints them; `None` when there is no such chain.
    async fn list(&self, chain: &str) -> Result<Option<Vec<String>>, FirewallError> {
        let out = self.run(&["-S", chain], &[]).await?;
        match out.status.code() {
            Some(0) => Ok(Some(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())),
            Some(1) => Ok(None),
            _ => Err(self.failed(&["-S", chain], &out)),
        }
    }

    async fn run_ok(&self, op: &[&str], rule: &[String]) -> Result<(), FirewallError> {
        let out = self.run(op, rule).await?;
        if out.status.success() { Ok(()) } else { Err(self.failed(op, &out)) }
    }

    async fn run(&self, op: &[&str], rule: &[String]) -> Result<Output, FirewallError> {
        // `-w`: wait for the xtables lock instead of failing while Docker edits its own rules.
        Command::new(&self.command).arg("-w").args(op).args(rule).output().await.map_err(|e| {
            FirewallError(format!(
                "cannot run {}: {e} (the hub needs iptables, and to run as root, to keep servers off the host \
                 and the private networks)",
                self.command.display()
            ))
        })
    }

    fn failed(&self, op: &[&str], out: &Output) -> FirewallError {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // iptables-nft prefixes warnings about the other backend's tables with '#'.
        let said: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        FirewallError(format!(
            "{} {} failed ({}): {}",
            self.command.display(),
            op.join(" "),
            out.status,
            if said.is_empty() { "no message" } else { said[0] }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firewall(allow: &[&str]) -> Firewall {
        let config = DockerConfig {
            allow_private: allow.iter().map(|r| PrivateRange::parse(r).unwrap()).collect(),
            dns_servers: Some(vec![Ipv4Addr::new(10, 0, 0, 2)]),
            ..DockerConfig::default()
        };
        Firewall::new(&config, "lh-0123456789ab", None)
    }

    #[test]
    fn replies_and_allowed_ranges_pass_before_anything_is_refused() {
        let rules: Vec<String> = firewall(&["10.1.2.0/24"]).chain_rules().iter().map(|r| r.join(" ")).collect();
        assert!(rules[0].contains("RELATED,ESTABLISHED") && rules[0].ends_with("-j RETURN"), "{rules:?}");
        assert!(
            rules[1].starts_with("-d 10.0.0.2/32 -p udp --dport 53 ") && rules[1].ends_with("-j RETURN"),
            "{rules:?}"
        );
        assert!(
            rules[2].starts_with("-d 10.0.0.2/32 -p tcp --dport 53 ") && rules[2].ends_with("-j RETURN"),
            "{rules:?}"
        );
        assert!(rules[3].starts_with("-d 10.1.2.0/24 ") && rules[3].ends_with("-j RETURN"), "{rules:?}");
        let refused: Vec<&str> = rules[4..].iter().map(|r| r.split_whitespace().nth(1).unwrap()).collect();
        assert_eq!(refused, ["169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"]);
        assert!(rules[4..].iter().all(|r| r.ends_with("-j REJECT --reject-with icmp-admin-prohibited")));
    }

    #[test]
    fn dns_passes_only_to_the_hosts_own_name_servers() {
        let conf = "# made by hand\nsearch lab\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nnameserver  169.254.169.253 \n";
        assert_eq!(resolvers_in(conf), [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(169, 254, 169, 253)]);
        assert!(resolvers_in("nameserver 127.0.0.53\n").is_empty(), "a loopback stub needs no rule");
        let none = Firewall::new(&DockerConfig { dns_servers: Some(vec![]), ..DockerConfig::default() }, "lh-x", None);
        assert!(!none.chain_rules().iter().any(|r| r.join(" ").contains("--dport 53")), "no port-53 hole for everyone");
    }

    #[test]
    fn the_chain_is_named_after_the_bridge_within_iptables_limits() {
        let f = firewall(&[]);
        assert_eq!(f.chain(), "LABHUB-lh-0123456789ab");
        assert!(f.chain().len() <= 28);
        assert!(f.jump_rule().join(" ").starts_with("-i lh-0123456789ab "));
        assert!(f.jump_rule().join(" ").ends_with("-j LABHUB-lh-0123456789ab"));
    }

    #[test]
    fn the_single_user_api_exception_names_exactly_its_address_and_port() {
        assert!(firewall(&[]).hub_api_rule().is_none());
        let api = "172.30.0.1:8081".parse().unwrap();
        let f = Firewall::new(&DockerConfig::default(), "lh-0123456789ab", Some(api));
        let rule = f.hub_api_rule().unwrap().join(" ");
        assert!(rule.starts_with("-i lh-0123456789ab -d 172.30.0.1/32 -p tcp --dport 8081 "), "{rule}");
        assert!(rule.ends_with("--comment labhub: the single-user API of hub labhub -j ACCEPT"), "{rule}");
    }

    /// Against the host's real iptables (the suite runs as root beside Docker), on a bridge
    /// name no interface has, so the rules match nothing while they exist.
    #[tokio::test]
    async fn a_hubs_earlier_exception_goes_when_its_address_changes_and_another_hubs_stays() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let bridge = format!("lh-t{:08x}", std::process::id() ^ nanos);
        let hub = |id: &str, port: u16| {
            let config = DockerConfig { hub_id: crate::config::HubId::parse(id).unwrap(), ..DockerConfig::default() };
            Firewall::new(&config, &bridge, Some(SocketAddrV4::new(Ipv4Addr::new(172, 31, 0, 1), port)))
        };
        let (a1, a2, b) = (hub("lab-a", 18081), hub("lab-a", 18082), hub("lab-b", 18083));
        let exceptions = |f: &Firewall| {
            let f = f.clone();
            async move {
                f.list("INPUT")
                    .await
                    .unwrap()
                    .unwrap()
                    .into_iter()
                    .filter(|l| l.contains(&f.bridge))
                    .collect::<Vec<_>>()
            }
        };
        a1.enforce().await.unwrap();
        // One made before exceptions named their hub, on this hub's bridge.
        let legacy = a1.exception_marked(SocketAddrV4::new(Ipv4Addr::new(172, 31, 0, 1), 18080), LEGACY_EXCEPTION);
        a1.run_ok(&["-I", "INPUT"], &legacy).await.unwrap();
        b.enforce().await.unwrap();
        a2.enforce().await.unwrap();
        let now = exceptions(&a2).await.join("\n");
        assert!(!now.contains("--dport 18081"), "lab-a's earlier port is closed: {now}");
        assert!(!now.contains("--dport 18080"), "and the one from before: {now}");
        assert!(now.contains("--dport 18082") && now.contains("--dport 18083"), "{now}");
        a2.remove_exception().await.unwrap();
        let now = exceptions(&a2).await.join("\n");
        assert!(!now.contains("--dport 18082") && now.contains("--dport 18083"), "{now}");
        b.remove().await.unwrap();
        a2.remove().await.unwrap();
        assert!(exceptions(&a2).await.is_empty(), "nothing of the test's is left");
    }

    #[tokio::test]
    async fn a_missing_iptables_is_a_clear_error() {
        let config = DockerConfig { iptables: "/nonexistent/iptables".into(), ..DockerConfig::default() };
        let e = Firewall::new(&config, "lh-0123456789ab", None).enforce().await.unwrap_err().to_string();
        assert!(e.starts_with("cannot run /nonexistent/iptables: "), "{e}");
        assert!(e.contains("the hub needs iptables"), "{e}");
    }
}
