//! `taskmesh-agent proxy-init`: installs, in the task's network namespace, the nat rules that
//! ECS's `aws-appmesh` CNI plugin installs for a task definition's `proxyConfiguration`, so a task
//! whose platform does not do it (a `proxy-init` container with NET_ADMIN) still sends its TCP
//! traffic through the agent.
//!
//! The work is split so that the rules can be checked without root:
//! - [`args`]: the command line and environment (`TASKMESH_*`, then the preview-era `APPMESH_*`
//!   names), resolved into a [`Config`] with the CNI plugin's validation ([`config`]);
//! - [`plan`]: the exact chains and rules, in the CNI plugin's order, per address family (pure);
//! - [`ruleset`]: reading `iptables-save -t nat` and turning a plan into one
//!   `iptables-restore --noflush` batch that converges to it, or removes it (pure);
//! - [`iptables`]: running `iptables-save` / `iptables-restore` and their `ip6tables` twins.
//!
//! [`run`] ties them together: one atomic batch per address family, IPv4 always, IPv6 when
//! enabled (by default: when `ip6tables` works here).

pub mod args;
pub mod config;
pub mod error;
pub mod iptables;
pub mod plan;
pub mod ruleset;

pub use args::ProxyInitArgs;
pub use config::{Config, ConfigError, IngressConfig, Ipv6Mode};
pub use error::ProxyInitError;
pub use plan::{EGRESS_CHAIN, Family, INGRESS_CHAIN, MULTIPORT_LIMIT, Rule, plan};

use tracing::{info, warn};

/// Runs `proxy-init` as the command line and environment say: installs the redirect (the
/// default), removes it (`--clean`), or prints the planned commands (`--dry-run`).
pub fn run(args: &ProxyInitArgs) -> Result<(), ProxyInitError> {
    let env = |name: &str| std::env::var(name).ok();
    if args.clean {
        let ipv6 = args.ipv6_mode(env)?;
        return clean(ipv6);
    }
    let config = args.resolve(env)?;
    for warning in config.warnings() {
        warn!(target: "proxy_init", "{warning}");
    }
    if args.dry_run {
        print!("{}", dry_run_text(&config));
        return Ok(());
    }
    install(&config)
}

/// The commands `install` would converge to, one `iptables`/`ip6tables` command a line.
pub fn dry_run_text(config: &Config) -> String {
    let mut text = String::new();
    for family in families(config.ipv6) {
        for rule in plan(config, family) {
            text.push_str(&rule.command(family));
            text.push('\n');
        }
    }
    text
}

fn families(ipv6: Ipv6Mode) -> Vec<Family> {
    match ipv6 {
        Ipv6Mode::Off => vec![Family::Ipv4],
        Ipv6Mode::On | Ipv6Mode::Auto => vec![Family::Ipv4, Family::Ipv6],
    }
}

/// Installs (or converges to) the planned rules, IPv4 first, then IPv6 when enabled.
pub fn install(config: &Config) -> Result<(), ProxyInitError> {
    for family in families(config.ipv6) {
        let Some(current) = read_family(family, config.ipv6)? else {
            if !config.egress_ignored_ipv6.is_empty() {
                warn!(
                    target: "proxy_init",
                    "IPv6 egress-ignored addresses {:?} are not used: IPv6 redirection is off",
                    config.egress_ignored_ipv6
                );
            }
            continue;
        };
        let rules = plan(config, family);
        let batch = ruleset::apply_batch(&rules, &current);
        iptables::restore(family, &batch).map_err(|err| match family {
            Family::Ipv6 => iptables::explain_ipv6(err, config.ipv6),
            Family::Ipv4 => err,
        })?;
        info!(
            target: "proxy_init",
            family = %family,
            rules = rules.len(),
            "redirect installed in the nat table"
        );
    }
    Ok(())
}

/// Removes our chains and every rule jumping to them, for IPv4 and (unless off) IPv6.
/// Nothing to remove is not an error.
pub fn clean(ipv6: Ipv6Mode) -> Result<(), ProxyInitError> {
    for family in families(ipv6) {
        let Some(current) = read_family(family, ipv6)? else {
            continue;
        };
        match ruleset::clean_batch(&current) {
            Some(batch) => {
                iptables::restore(family, &batch)?;
                info!(target: "proxy_init", family = %family, "redirect removed from the nat table");
            }
            None => info!(target: "proxy_init", family = %family, "no redirect to remove"),
        }
    }
    Ok(())
}

/// Reads the family's nat table. For IPv6 in `auto` mode a missing or unusable `ip6tables`
/// means "no IPv6 here" (`None`); a refusal for lack of privilege is always an error.
fn read_family(
    family: Family,
    ipv6: Ipv6Mode,
) -> Result<Option<ruleset::NatTable>, ProxyInitError> {
    match iptables::save(family) {
        Ok(text) => Ok(Some(ruleset::NatTable::parse(&text))),
        Err(err @ ProxyInitError::PermissionDenied { .. }) => Err(err),
        Err(err) if family == Family::Ipv6 && ipv6 == Ipv6Mode::Auto => {
            info!(target: "proxy_init", "IPv6 redirection skipped: {err}");
            Ok(None)
        }
        Err(err) if family == Family::Ipv6 => Err(iptables::explain_ipv6(err, ipv6)),
        Err(err) => Err(err),
    }
}
