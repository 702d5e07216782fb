//! The exact nat rules of the `aws-appmesh` CNI plugin (amazon-vpc-cni-plugins
//! `plugins/aws-appmesh/plugin/commands.go`), in its order, for one address family:
//!
//! ```text
//! # ingress (only with a proxy ingress port and app ports)
//! -N APPMESH_INGRESS
//! -A APPMESH_INGRESS -p tcp -m multiport --dports <first 15 app ports> -j REDIRECT --to-port <ingress>
//! -A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS
//! # egress
//! -N APPMESH_EGRESS
//! -A APPMESH_EGRESS -m owner --uid-owner <uid> -j RETURN                      # if set
//! -A APPMESH_EGRESS -m owner --gid-owner <gid> -j RETURN                      # if set
//! -A APPMESH_EGRESS -p tcp -m multiport --dports <first 15 ignored ports> -j RETURN   # if any
//! -A APPMESH_EGRESS -p tcp -d <ignored IPs of this family> -j RETURN           # if any
//! -A APPMESH_EGRESS -p tcp -j REDIRECT --to <egress>
//! -A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS
//! ```
//!
//! Pure: no I/O. [`super::ruleset`] turns a plan into an `iptables-restore` batch.

use std::fmt;

use super::config::Config;

/// The chain that redirects inbound connections to the app ports.
pub const INGRESS_CHAIN: &str = "APPMESH_INGRESS";
/// The chain that redirects outbound TCP.
pub const EGRESS_CHAIN: &str = "APPMESH_EGRESS";
/// Every chain `proxy-init` owns (and `--clean` removes), all in the nat table.
pub const OWN_CHAINS: [&str; 2] = [INGRESS_CHAIN, EGRESS_CHAIN];
/// Ports per `-m multiport` rule; the CNI plugin ignores the ports after these.
pub const MULTIPORT_LIMIT: usize = 15;

/// An address family: which tool set applies the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// `iptables` or `ip6tables`.
    pub fn iptables(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables",
            Family::Ipv6 => "ip6tables",
        }
    }

    /// `iptables-save` or `ip6tables-save`.
    pub fn save(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables-save",
            Family::Ipv6 => "ip6tables-save",
        }
    }

    /// `iptables-restore` or `ip6tables-restore`.
    pub fn restore(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables-restore",
            Family::Ipv6 => "ip6tables-restore",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

/// One step of the plan, in the nat table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Create the chain (`-N`); when converging, an existing one is flushed instead.
    NewChain(&'static str),
    /// Append a rule (`-A chain spec…`).
    Append {
        chain: &'static str,
        spec: Vec<String>,
    },
}

impl Rule {
    fn append(chain: &'static str, spec: &[&str]) -> Rule {
        Rule::Append {
            chain,
            spec: spec.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// The rule as iptables arguments after `-t nat`, e.g. `-A OUTPUT -p tcp …`.
    pub fn arguments(&self) -> String {
        match self {
            Rule::NewChain(chain) => format!("-N {chain}"),
            Rule::Append { chain, spec } => format!("-A {chain} {}", spec.join(" ")),
        }
    }

    /// The rule as a shell command, e.g. `ip6tables -t nat -N APPMESH_EGRESS`.
    pub fn command(&self, family: Family) -> String {
        format!("{} -t nat {}", family.iptables(), self.arguments())
    }

    /// The chain this rule jumps to, if it is a jump to one of [`OWN_CHAINS`].
    pub fn jump_target(&self) -> Option<&'static str> {
        match self {
            Rule::Append { spec, .. } => match spec.as_slice() {
                [.., jump, target] if jump == "-j" => {
                    OWN_CHAINS.iter().copied().find(|own| own == target)
                }
                _ => None,
            },
            Rule::NewChain(_) => None,
        }
    }
}

/// The rules for `family`, in the CNI plugin's order.
pub fn plan(config: &Config, family: Family) -> Vec<Rule> {
    let mut rules = Vec::new();
    if let Some(ingress) = &config.ingress {
        let ports = multiport(&ingress.app_ports);
        let to_port = ingress.proxy_ingress_port.to_string();
        rules.push(Rule::NewChain(INGRESS_CHAIN));
        rules.push(Rule::append(
            INGRESS_CHAIN,
            &[
                "-p",
                "tcp",
                "-m",
                "multiport",
                "--dports",
                &ports,
                "-j",
                "REDIRECT",
                "--to-port",
                &to_port,
            ],
        ));
        rules.push(Rule::append(
            "PREROUTING",
            &[
                "-p",
                "tcp",
                "-m",
                "addrtype",
                "!",
                "--src-type",
                "LOCAL",
                "-j",
                INGRESS_CHAIN,
            ],
        ));
    }

    rules.push(Rule::NewChain(EGRESS_CHAIN));
    if let Some(uid) = config.ignored_uid {
        let uid = uid.to_string();
        rules.push(Rule::append(
            EGRESS_CHAIN,
            &["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"],
        ));
    }
    if let Some(gid) = config.ignored_gid {
        let gid = gid.to_string();
        rules.push(Rule::append(
            EGRESS_CHAIN,
            &["-m", "owner", "--gid-owner", &gid, "-j", "RETURN"],
        ));
    }
    if !config.egress_ignored_ports.is_empty() {
        let ports = multiport(&config.egress_ignored_ports);
        rules.push(Rule::append(
            EGRESS_CHAIN,
            &[
                "-p",
                "tcp",
                "-m",
                "multiport",
                "--dports",
                &ports,
                "-j",
                "RETURN",
            ],
        ));
    }
    let ignored_ips = match family {
        Family::Ipv4 => &config.egress_ignored_ipv4,
        Family::Ipv6 => &config.egress_ignored_ipv6,
    };
    if !ignored_ips.is_empty() {
        let ips = ignored_ips.join(",");
        rules.push(Rule::append(
            EGRESS_CHAIN,
            &["-p", "tcp", "-d", &ips, "-j", "RETURN"],
        ));
    }
    let to_port = config.proxy_egress_port.to_string();
    rules.push(Rule::append(
        EGRESS_CHAIN,
        &["-p", "tcp", "-j", "REDIRECT", "--to", &to_port],
    ));
    rules.push(Rule::append(
        "OUTPUT",
        &[
            "-p",
            "tcp",
            "-m",
            "addrtype",
            "!",
            "--dst-type",
            "LOCAL",
            "-j",
            EGRESS_CHAIN,
        ],
    ));
    rules
}

/// The first [`MULTIPORT_LIMIT`] ports, comma-joined.
fn multiport(ports: &[u16]) -> String {
    ports
        .iter()
        .take(MULTIPORT_LIMIT)
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_init::config::{IngressConfig, Ipv6Mode};

    fn lines(config: &Config, family: Family) -> Vec<String> {
        plan(config, family)
            .iter()
            .map(|r| r.command(family))
            .collect()
    }

    fn ecs_default() -> Config {
        Config {
            ignored_uid: Some(1337),
            ignored_gid: None,
            proxy_egress_port: 15001,
            ingress: Some(IngressConfig {
                proxy_ingress_port: 15000,
                app_ports: vec![9080],
            }),
            egress_ignored_ports: vec![],
            egress_ignored_ipv4: vec!["169.254.170.2".into(), "169.254.169.254".into()],
            egress_ignored_ipv6: vec![],
            ipv6: Ipv6Mode::Auto,
        }
    }

    #[test]
    fn ecs_default_ipv4_rules_in_cni_order() {
        assert_eq!(
            lines(&ecs_default(), Family::Ipv4),
            [
                "iptables -t nat -N APPMESH_INGRESS",
                "iptables -t nat -A APPMESH_INGRESS -p tcp -m multiport --dports 9080 -j REDIRECT --to-port 15000",
                "iptables -t nat -A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS",
                "iptables -t nat -N APPMESH_EGRESS",
                "iptables -t nat -A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN",
                "iptables -t nat -A APPMESH_EGRESS -p tcp -d 169.254.170.2,169.254.169.254 -j RETURN",
                "iptables -t nat -A APPMESH_EGRESS -p tcp -j REDIRECT --to 15001",
                "iptables -t nat -A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
            ]
        );
    }

    #[test]
    fn ipv6_has_no_ignored_ip_rule_without_ipv6_entries() {
        assert_eq!(
            lines(&ecs_default(), Family::Ipv6),
            [
                "ip6tables -t nat -N APPMESH_INGRESS",
                "ip6tables -t nat -A APPMESH_INGRESS -p tcp -m multiport --dports 9080 -j REDIRECT --to-port 15000",
                "ip6tables -t nat -A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS",
                "ip6tables -t nat -N APPMESH_EGRESS",
                "ip6tables -t nat -A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN",
                "ip6tables -t nat -A APPMESH_EGRESS -p tcp -j REDIRECT --to 15001",
                "ip6tables -t nat -A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
            ]
        );
    }

    #[test]
    fn every_optional_rule_in_order() {
        let config = Config {
            ignored_gid: Some(1338),
            egress_ignored_ports: vec![22, 2049],
            egress_ignored_ipv4: vec!["10.0.0.0/8".into(), "169.254.170.2".into()],
            egress_ignored_ipv6: vec!["fd00::/8".into(), "::1".into()],
            ingress: Some(IngressConfig {
                proxy_ingress_port: 15000,
                app_ports: vec![9080, 9443],
            }),
            ..ecs_default()
        };
        assert_eq!(
            plan(&config, Family::Ipv6)
                .iter()
                .map(Rule::arguments)
                .collect::<Vec<_>>(),
            [
                "-N APPMESH_INGRESS",
                "-A APPMESH_INGRESS -p tcp -m multiport --dports 9080,9443 -j REDIRECT --to-port 15000",
                "-A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS",
                "-N APPMESH_EGRESS",
                "-A APPMESH_EGRESS -m owner --uid-owner 1337 -j RETURN",
                "-A APPMESH_EGRESS -m owner --gid-owner 1338 -j RETURN",
                "-A APPMESH_EGRESS -p tcp -m multiport --dports 22,2049 -j RETURN",
                "-A APPMESH_EGRESS -p tcp -d fd00::/8,::1 -j RETURN",
                "-A APPMESH_EGRESS -p tcp -j REDIRECT --to 15001",
                "-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
            ]
        );
        assert!(
            lines(&config, Family::Ipv4).contains(
                &"iptables -t nat -A APPMESH_EGRESS -p tcp -d 10.0.0.0/8,169.254.170.2 -j RETURN"
                    .to_owned()
            )
        );
    }

    #[test]
    fn egress_only_with_gid_only() {
        let config = Config {
            ignored_uid: None,
            ignored_gid: Some(1338),
            ingress: None,
            egress_ignored_ipv4: vec![],
            ..ecs_default()
        };
        assert_eq!(
            lines(&config, Family::Ipv4),
            [
                "iptables -t nat -N APPMESH_EGRESS",
                "iptables -t nat -A APPMESH_EGRESS -m owner --gid-owner 1338 -j RETURN",
                "iptables -t nat -A APPMESH_EGRESS -p tcp -j REDIRECT --to 15001",
                "iptables -t nat -A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS",
            ]
        );
    }

    #[test]
    fn only_the_first_fifteen_ports_are_used() {
        let config = Config {
            ingress: Some(IngressConfig {
                proxy_ingress_port: 15000,
                app_ports: (8001..=8020).collect(),
            }),
            egress_ignored_ports: (1..=16).collect(),
            ..ecs_default()
        };
        let rules = lines(&config, Family::Ipv4);
        assert_eq!(
            rules[1],
            "iptables -t nat -A APPMESH_INGRESS -p tcp -m multiport --dports \
             8001,8002,8003,8004,8005,8006,8007,8008,8009,8010,8011,8012,8013,8014,8015 \
             -j REDIRECT --to-port 15000"
        );
        assert_eq!(
            rules[5],
            "iptables -t nat -A APPMESH_EGRESS -p tcp -m multiport --dports \
             1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 -j RETURN"
        );
    }

    #[test]
    fn jump_targets() {
        let rules = plan(&ecs_default(), Family::Ipv4);
        let jumps: Vec<_> = rules.iter().filter_map(Rule::jump_target).collect();
        assert_eq!(jumps, [INGRESS_CHAIN, EGRESS_CHAIN]);
    }
}
