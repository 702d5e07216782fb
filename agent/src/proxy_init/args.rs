//! The `proxy-init` command line. Every setting is also read from the environment the
//! transformer writes into the proxy-init container (`TASKMESH_*`, named after the ECS
//! `proxyConfiguration` properties) and, when that is unset or empty, from the preview-era
//! `aws-appmesh-proxy-route-manager` names (`APPMESH_*`), so an old task definition keeps working.

use clap::Args;

use super::config::{Config, ConfigError, Ipv6Mode, RawConfig, Setting};

/// One configurable setting: its flag, its `TASKMESH_*` variable and its preview-era fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingName {
    /// The command-line flag, e.g. `--ignored-uid`.
    pub flag: &'static str,
    /// The environment variable the transformer writes, e.g. `TASKMESH_IGNORED_UID`.
    pub env: &'static str,
    /// The preview-era variable read when `env` is unset or empty, e.g. `APPMESH_IGNORE_UID`.
    pub legacy_env: &'static str,
}

/// `IgnoredUID`: egress of processes with this uid (the agent's) is not redirected.
pub const IGNORED_UID: SettingName = SettingName {
    flag: "--ignored-uid",
    env: "TASKMESH_IGNORED_UID",
    legacy_env: "APPMESH_IGNORE_UID",
};
/// `IgnoredGID`: egress of processes with this gid is not redirected.
pub const IGNORED_GID: SettingName = SettingName {
    flag: "--ignored-gid",
    env: "TASKMESH_IGNORED_GID",
    legacy_env: "APPMESH_IGNORE_GID",
};
/// `ProxyIngressPort`: where inbound connections to the app ports are redirected.
pub const PROXY_INGRESS_PORT: SettingName = SettingName {
    flag: "--proxy-ingress-port",
    env: "TASKMESH_PROXY_INGRESS_PORT",
    legacy_env: "APPMESH_ENVOY_INGRESS_PORT",
};
/// `ProxyEgressPort`: where outbound TCP is redirected.
pub const PROXY_EGRESS_PORT: SettingName = SettingName {
    flag: "--proxy-egress-port",
    env: "TASKMESH_PROXY_EGRESS_PORT",
    legacy_env: "APPMESH_ENVOY_EGRESS_PORT",
};
/// `AppPorts`: the application's listener ports (comma list).
pub const APP_PORTS: SettingName = SettingName {
    flag: "--app-ports",
    env: "TASKMESH_APP_PORTS",
    legacy_env: "APPMESH_APP_PORTS",
};
/// `EgressIgnoredIPs`: destinations (addresses or CIDR blocks, v4 and v6) never redirected.
pub const EGRESS_IGNORED_IPS: SettingName = SettingName {
    flag: "--egress-ignored-ips",
    env: "TASKMESH_EGRESS_IGNORED_IPS",
    legacy_env: "APPMESH_EGRESS_IGNORED_IP",
};
/// `EgressIgnoredPorts`: destination ports never redirected.
pub const EGRESS_IGNORED_PORTS: SettingName = SettingName {
    flag: "--egress-ignored-ports",
    env: "TASKMESH_EGRESS_IGNORED_PORTS",
    legacy_env: "APPMESH_EGRESS_IGNORED_PORTS",
};
/// Whether to mirror the rules with `ip6tables`: `auto` (default), on or off.
pub const ENABLE_IPV6: SettingName = SettingName {
    flag: "--enable-ipv6",
    env: "TASKMESH_ENABLE_IPV6",
    legacy_env: "APPMESH_ENABLE_IPV6",
};

/// Arguments of `taskmesh-agent proxy-init`.
#[derive(Args, Debug, Clone, Default)]
pub struct ProxyInitArgs {
    /// Egress from this uid (the agent's user) is not redirected. One of uid/gid is required.
    #[arg(long, env = "TASKMESH_IGNORED_UID", value_name = "UID")]
    pub ignored_uid: Option<String>,

    /// Egress from this gid is not redirected.
    #[arg(long, env = "TASKMESH_IGNORED_GID", value_name = "GID")]
    pub ignored_gid: Option<String>,

    /// Port the agent's ingress listener uses; required together with --app-ports.
    #[arg(long, env = "TASKMESH_PROXY_INGRESS_PORT", value_name = "PORT")]
    pub proxy_ingress_port: Option<String>,

    /// Port the agent's egress listener uses (required).
    #[arg(long, env = "TASKMESH_PROXY_EGRESS_PORT", value_name = "PORT")]
    pub proxy_egress_port: Option<String>,

    /// Comma list of the app's ports whose inbound TCP goes to the ingress port (first 15 used).
    #[arg(long, env = "TASKMESH_APP_PORTS", value_name = "PORTS")]
    pub app_ports: Option<String>,

    /// Comma list of IPv4/IPv6 addresses or CIDR blocks never redirected (169.254.170.2 and
    /// 169.254.169.254 are always added, as ECS does).
    #[arg(long, env = "TASKMESH_EGRESS_IGNORED_IPS", value_name = "IPS")]
    pub egress_ignored_ips: Option<String>,

    /// Comma list of destination ports never redirected (first 15 used).
    #[arg(long, env = "TASKMESH_EGRESS_IGNORED_PORTS", value_name = "PORTS")]
    pub egress_ignored_ports: Option<String>,

    /// Mirror the rules with ip6tables: auto (when ip6tables works), true/1/on, false/0/off.
    #[arg(long, env = "TASKMESH_ENABLE_IPV6", value_name = "auto|true|false")]
    pub enable_ipv6: Option<String>,

    /// Remove our chains (APPMESH_INGRESS, APPMESH_EGRESS) and the rules jumping to them.
    #[arg(long, env = "TASKMESH_PROXY_INIT_CLEAN")]
    pub clean: bool,

    /// Print the iptables/ip6tables commands that would be applied, change nothing.
    #[arg(long, env = "TASKMESH_PROXY_INIT_DRY_RUN", conflicts_with = "clean")]
    pub dry_run: bool,
}

impl ProxyInitArgs {
    /// Resolves the arguments into a validated [`Config`]. `env` looks up the preview-era
    /// fallback variables (the `TASKMESH_*` ones are already in the fields, through clap).
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw = RawConfig {
            ignored_uid: pick(&self.ignored_uid, IGNORED_UID, &env),
            ignored_gid: pick(&self.ignored_gid, IGNORED_GID, &env),
            proxy_ingress_port: pick(&self.proxy_ingress_port, PROXY_INGRESS_PORT, &env),
            proxy_egress_port: pick(&self.proxy_egress_port, PROXY_EGRESS_PORT, &env),
            app_ports: pick(&self.app_ports, APP_PORTS, &env),
            egress_ignored_ips: pick(&self.egress_ignored_ips, EGRESS_IGNORED_IPS, &env),
            egress_ignored_ports: pick(&self.egress_ignored_ports, EGRESS_IGNORED_PORTS, &env),
            enable_ipv6: pick(&self.enable_ipv6, ENABLE_IPV6, &env),
        };
        Config::from_raw(raw)
    }

    /// Only the IPv6 setting (what `--clean` needs; the rest may be absent then).
    pub fn ipv6_mode(&self, env: impl Fn(&str) -> Option<String>) -> Result<Ipv6Mode, ConfigError> {
        Ipv6Mode::from_setting(pick(&self.enable_ipv6, ENABLE_IPV6, &env).as_ref())
    }
}

/// The flag/`TASKMESH_*` value when it is set and not blank, else the preview-era variable's.
fn pick(
    value: &Option<String>,
    name: SettingName,
    env: &impl Fn(&str) -> Option<String>,
) -> Option<Setting> {
    let present = |v: &String| !v.trim().is_empty();
    if let Some(v) = value.as_ref().filter(|v| present(v)) {
        return Some(Setting {
            value: v.clone(),
            source: format!("{} ({})", name.flag, name.env),
        });
    }
    env(name.legacy_env).filter(present).map(|v| Setting {
        value: v,
        source: name.legacy_env.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: ProxyInitArgs,
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn flags_resolve_into_config() {
        let cli = Cli::try_parse_from([
            "proxy-init",
            "--ignored-uid",
            "1337",
            "--proxy-ingress-port",
            "15000",
            "--proxy-egress-port",
            "15001",
            "--app-ports",
            "9080,9081",
            "--egress-ignored-ips",
            "10.0.0.0/8,fd00::/8",
            "--egress-ignored-ports",
            "22",
            "--enable-ipv6",
            "false",
        ])
        .expect("parses");
        let config = cli.args.resolve(no_env).expect("valid");
        assert_eq!(config.ignored_uid, Some(1337));
        assert_eq!(config.proxy_egress_port, 15001);
        assert_eq!(
            config
                .ingress
                .as_ref()
                .map(|i| (i.proxy_ingress_port, i.app_ports.clone())),
            Some((15000, vec![9080, 9081]))
        );
        assert_eq!(
            config.egress_ignored_ipv4,
            ["10.0.0.0/8", "169.254.170.2", "169.254.169.254"]
        );
        assert_eq!(config.egress_ignored_ipv6, ["fd00::/8"]);
        assert_eq!(config.egress_ignored_ports, [22]);
        assert_eq!(config.ipv6, Ipv6Mode::Off);
    }

    #[test]
    fn preview_era_names_are_fallbacks() {
        let env = |name: &str| {
            let value = match name {
                "APPMESH_IGNORE_UID" => "1337",
                "APPMESH_IGNORE_GID" => "1338",
                "APPMESH_ENVOY_INGRESS_PORT" => "15000",
                "APPMESH_ENVOY_EGRESS_PORT" => "15001",
                "APPMESH_APP_PORTS" => "9080",
                "APPMESH_EGRESS_IGNORED_IP" => "169.254.170.2,169.254.169.254",
                "APPMESH_EGRESS_IGNORED_PORTS" => "22",
                "APPMESH_ENABLE_IPV6" => "1",
                _ => return None,
            };
            Some(value.to_owned())
        };
        let config = ProxyInitArgs::default().resolve(env).expect("valid");
        assert_eq!(config.ignored_uid, Some(1337));
        assert_eq!(config.ignored_gid, Some(1338));
        assert_eq!(config.proxy_egress_port, 15001);
        assert_eq!(config.ingress.map(|i| i.app_ports), Some(vec![9080]));
        assert_eq!(
            config.egress_ignored_ipv4,
            ["169.254.170.2", "169.254.169.254"]
        );
        assert_eq!(config.egress_ignored_ports, [22]);
        assert_eq!(config.ipv6, Ipv6Mode::On);
    }

    #[test]
    fn taskmesh_value_wins_over_preview_name_and_blank_falls_back() {
        let env = |name: &str| match name {
            "APPMESH_IGNORE_UID" => Some("1".to_owned()),
            "APPMESH_ENVOY_EGRESS_PORT" => Some("16001".to_owned()),
            _ => None,
        };
        let args = ProxyInitArgs {
            ignored_uid: Some("1337".into()),
            proxy_egress_port: Some("  ".into()),
            ..ProxyInitArgs::default()
        };
        let config = args.resolve(env).expect("valid");
        assert_eq!(config.ignored_uid, Some(1337));
        assert_eq!(config.proxy_egress_port, 16001);
    }

    #[test]
    fn errors_name_the_setting_that_was_read() {
        let env = |name: &str| (name == "APPMESH_ENVOY_EGRESS_PORT").then(|| "x".to_owned());
        let args = ProxyInitArgs {
            ignored_uid: Some("1337".into()),
            ..ProxyInitArgs::default()
        };
        let err = args.resolve(env).expect_err("bad port").to_string();
        assert!(err.contains("APPMESH_ENVOY_EGRESS_PORT"), "{err}");
        assert!(err.contains("\"x\""), "{err}");

        let args = ProxyInitArgs {
            ignored_uid: Some("1337".into()),
            proxy_egress_port: Some("0".into()),
            ..ProxyInitArgs::default()
        };
        let err = args.resolve(no_env).expect_err("port 0").to_string();
        assert!(
            err.contains("--proxy-egress-port (TASKMESH_PROXY_EGRESS_PORT)"),
            "{err}"
        );
    }

    #[test]
    fn clean_needs_only_the_ipv6_setting() {
        let args = ProxyInitArgs {
            clean: true,
            ..ProxyInitArgs::default()
        };
        assert_eq!(args.ipv6_mode(no_env).expect("auto"), Ipv6Mode::Auto);
        assert!(args.resolve(no_env).is_err());
    }

    #[test]
    fn dry_run_and_clean_conflict() {
        assert!(Cli::try_parse_from(["proxy-init", "--clean", "--dry-run"]).is_err());
    }
}
