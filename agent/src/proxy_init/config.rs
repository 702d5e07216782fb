//! What `proxy-init` installs, validated exactly as the `aws-appmesh` CNI plugin validates its
//! network configuration (amazon-vpc-cni-plugins `plugins/aws-appmesh/config/netconfig.go`), with
//! the ECS agent's addition of the two metadata endpoints to the ignored IPs:
//! - one of the ignored uid / gid is required; the egress port is required;
//! - the ingress port and the app ports come as a pair (both, or neither: egress only);
//! - ports are integers > 0 (and, as iptables needs, at most 65535); empty list items are skipped;
//! - ignored IPs are IPv4 or IPv6 addresses or CIDR blocks, split by family;
//! - only the first [`MULTIPORT_LIMIT`] ports of a list are used (the rest are reported by
//!   [`Config::warnings`]).

use std::net::IpAddr;

use super::plan::MULTIPORT_LIMIT;

/// The ECS task metadata / credentials endpoint, always ignored (the ECS agent adds it).
pub const TASK_METADATA_IP: &str = "169.254.170.2";
/// The EC2 instance metadata endpoint, always ignored (the ECS agent adds it).
pub const INSTANCE_METADATA_IP: &str = "169.254.169.254";

/// A validated `proxy-init` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `IgnoredUID`.
    pub ignored_uid: Option<u32>,
    /// `IgnoredGID`.
    pub ignored_gid: Option<u32>,
    /// `ProxyEgressPort`.
    pub proxy_egress_port: u16,
    /// `ProxyIngressPort` with `AppPorts`; `None` for an egress-only proxy.
    pub ingress: Option<IngressConfig>,
    /// `EgressIgnoredPorts`, all of them (the plan uses the first [`MULTIPORT_LIMIT`]).
    pub egress_ignored_ports: Vec<u16>,
    /// The IPv4 entries of `EgressIgnoredIPs`, as written, then the metadata endpoints.
    pub egress_ignored_ipv4: Vec<String>,
    /// The IPv6 entries of `EgressIgnoredIPs`, as written.
    pub egress_ignored_ipv6: Vec<String>,
    /// Whether the rules are mirrored with ip6tables.
    pub ipv6: Ipv6Mode,
}

/// Inbound redirection: connections to `app_ports` go to `proxy_ingress_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressConfig {
    /// `ProxyIngressPort`.
    pub proxy_ingress_port: u16,
    /// `AppPorts`, all of them (the plan uses the first [`MULTIPORT_LIMIT`]).
    pub app_ports: Vec<u16>,
}

/// Whether IPv6 rules are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ipv6Mode {
    /// When `ip6tables` works in this namespace (the default).
    #[default]
    Auto,
    /// Always; a failing `ip6tables` is an error.
    On,
    /// Never.
    Off,
}

/// A raw setting and where it was read, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The text as given.
    pub value: String,
    /// The flag and variable, or the preview-era variable, it came from.
    pub source: String,
}

/// The settings as read, before validation.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub ignored_uid: Option<Setting>,
    pub ignored_gid: Option<Setting>,
    pub proxy_ingress_port: Option<Setting>,
    pub proxy_egress_port: Option<Setting>,
    pub app_ports: Option<Setting>,
    pub egress_ignored_ips: Option<Setting>,
    pub egress_ignored_ports: Option<Setting>,
    pub enable_ipv6: Option<Setting>,
}

/// A configuration the CNI plugin would reject, or a value iptables cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "missing required parameter ignoredGID or ignoredUID: set --ignored-uid \
         (TASKMESH_IGNORED_UID, the agent container's user) or --ignored-gid (TASKMESH_IGNORED_GID)"
    )]
    MissingIgnoredId,
    #[error(
        "missing required parameter proxyEgressPort: set --proxy-egress-port \
         (TASKMESH_PROXY_EGRESS_PORT, the agent's egress listener, usually 15001)"
    )]
    MissingEgressPort,
    #[error(
        "missing parameter proxyIngressPort (required if appPorts are provided): app ports come \
         from {app_ports_source}; set --proxy-ingress-port (TASKMESH_PROXY_INGRESS_PORT) too, \
         or drop the app ports for an egress-only proxy"
    )]
    AppPortsWithoutIngressPort { app_ports_source: String },
    #[error(
        "missing parameter appPorts (required if proxyIngressPort is provided): the ingress port \
         comes from {ingress_source}; set --app-ports (TASKMESH_APP_PORTS) too, or drop the \
         ingress port for an egress-only proxy"
    )]
    IngressPortWithoutAppPorts { ingress_source: String },
    #[error("invalid port \"{value}\" specified in {setting}: ports are integers from 1 to 65535")]
    InvalidPort { value: String, setting: String },
    #[error("invalid id \"{value}\" specified in {setting}: a numeric uid/gid is expected")]
    InvalidId { value: String, setting: String },
    #[error(
        "invalid IP or CIDR block \"{value}\" specified in {setting}: expected e.g. 10.0.0.5, \
         10.0.0.0/8, fd00::1 or fd00::/8"
    )]
    InvalidIp { value: String, setting: String },
    #[error("invalid value \"{value}\" in {setting}: expected auto, true/1/on or false/0/off")]
    InvalidBool { value: String, setting: String },
}

impl Config {
    /// Validates raw settings the way the CNI plugin does (see the module docs).
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        if raw.ignored_uid.is_none() && raw.ignored_gid.is_none() {
            return Err(ConfigError::MissingIgnoredId);
        }
        let Some(egress) = raw.proxy_egress_port.as_ref() else {
            return Err(ConfigError::MissingEgressPort);
        };
        let app_ports = match &raw.app_ports {
            Some(setting) => parse_ports(setting)?,
            None => Vec::new(),
        };
        let ingress = match (&raw.proxy_ingress_port, app_ports.is_empty()) {
            (None, true) => None,
            (None, false) => {
                return Err(ConfigError::AppPortsWithoutIngressPort {
                    app_ports_source: raw
                        .app_ports
                        .as_ref()
                        .map(|s| s.source.clone())
                        .unwrap_or_default(),
                });
            }
            (Some(port), true) => {
                return Err(ConfigError::IngressPortWithoutAppPorts {
                    ingress_source: port.source.clone(),
                });
            }
            (Some(port), false) => Some(IngressConfig {
                proxy_ingress_port: parse_port(port.value.trim(), &port.source)?,
                app_ports,
            }),
        };
        let (mut egress_ignored_ipv4, egress_ignored_ipv6) = match &raw.egress_ignored_ips {
            Some(setting) => split_ips(setting)?,
            None => (Vec::new(), Vec::new()),
        };
        for ip in [TASK_METADATA_IP, INSTANCE_METADATA_IP] {
            if !egress_ignored_ipv4.iter().any(|have| have == ip) {
                egress_ignored_ipv4.push(ip.to_owned());
            }
        }
        Ok(Config {
            ignored_uid: raw.ignored_uid.as_ref().map(parse_id).transpose()?,
            ignored_gid: raw.ignored_gid.as_ref().map(parse_id).transpose()?,
            proxy_egress_port: parse_port(egress.value.trim(), &egress.source)?,
            ingress,
            egress_ignored_ports: match &raw.egress_ignored_ports {
                Some(setting) => parse_ports(setting)?,
                None => Vec::new(),
            },
            egress_ignored_ipv4,
            egress_ignored_ipv6,
            ipv6: Ipv6Mode::from_setting(raw.enable_ipv6.as_ref())?,
        })
    }

    /// What the plan leaves out: ports beyond the multiport limit, as the CNI plugin logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut check = |what: &str, ports: &[u16]| {
            if ports.len() > MULTIPORT_LIMIT {
                warnings.push(format!(
                    "multiport limit {MULTIPORT_LIMIT} exceeded: {what} {:?} are ignored",
                    &ports[MULTIPORT_LIMIT..]
                ));
            }
        };
        if let Some(ingress) = &self.ingress {
            check("app ports", &ingress.app_ports);
        }
        check("egress-ignored ports", &self.egress_ignored_ports);
        warnings
    }
}

impl Ipv6Mode {
    /// Reads `auto`, `true`/`1`/`yes`/`on`/`enabled` or `false`/`0`/`no`/`off`/`disabled`
    /// (any case); absent means `auto`.
    pub fn from_setting(setting: Option<&Setting>) -> Result<Ipv6Mode, ConfigError> {
        let Some(setting) = setting else {
            return Ok(Ipv6Mode::Auto);
        };
        match setting.value.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Ipv6Mode::Auto),
            "1" | "true" | "yes" | "on" | "enabled" => Ok(Ipv6Mode::On),
            "0" | "false" | "no" | "off" | "disabled" => Ok(Ipv6Mode::Off),
            _ => Err(ConfigError::InvalidBool {
                value: setting.value.clone(),
                setting: setting.source.clone(),
            }),
        }
    }
}

fn parse_id(setting: &Setting) -> Result<u32, ConfigError> {
    setting
        .value
        .trim()
        .parse::<u32>()
        .map_err(|_| ConfigError::InvalidId {
            value: setting.value.clone(),
            setting: setting.source.clone(),
        })
}

fn parse_port(value: &str, source: &str) -> Result<u16, ConfigError> {
    match value.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(ConfigError::InvalidPort {
            value: value.to_owned(),
            setting: source.to_owned(),
        }),
    }
}

/// A comma list of ports; empty items are skipped (as the CNI plugin does).
fn parse_ports(setting: &Setting) -> Result<Vec<u16>, ConfigError> {
    setting
        .value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| parse_port(item, &setting.source))
        .collect()
}

/// A comma list of addresses and CIDR blocks, split into (IPv4, IPv6), each kept as written.
fn split_ips(setting: &Setting) -> Result<(Vec<String>, Vec<String>), ConfigError> {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for item in setting.value.split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        let invalid = || ConfigError::InvalidIp {
            value: item.to_owned(),
            setting: setting.source.clone(),
        };
        let (address, prefix) = match item.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (item, None),
        };
        let address: IpAddr = address.parse().map_err(|_| invalid())?;
        let max_prefix = if address.is_ipv4() { 32 } else { 128 };
        if let Some(prefix) = prefix {
            let valid = prefix.bytes().all(|b| b.is_ascii_digit())
                && prefix.parse::<u8>().is_ok_and(|p| p <= max_prefix);
            if !valid {
                return Err(invalid());
            }
        }
        match address {
            IpAddr::V4(_) => v4.push(item.to_owned()),
            IpAddr::V6(_) => v6.push(item.to_owned()),
        }
    }
    Ok((v4, v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(value: &str) -> Option<Setting> {
        Some(Setting {
            value: value.to_owned(),
            source: "TEST_SETTING".to_owned(),
        })
    }

    fn minimal() -> RawConfig {
        RawConfig {
            ignored_uid: set("1337"),
            proxy_egress_port: set("15001"),
            ..RawConfig::default()
        }
    }

    #[test]
    fn uid_or_gid_is_required() {
        let raw = RawConfig {
            ignored_uid: None,
            ..minimal()
        };
        assert_eq!(Config::from_raw(raw), Err(ConfigError::MissingIgnoredId));
        let raw = RawConfig {
            ignored_uid: None,
            ignored_gid: set("1338"),
            ..minimal()
        };
        let config = Config::from_raw(raw).expect("gid alone is enough");
        assert_eq!((config.ignored_uid, config.ignored_gid), (None, Some(1338)));
    }

    #[test]
    fn egress_port_is_required() {
        let raw = RawConfig {
            proxy_egress_port: None,
            ..minimal()
        };
        assert_eq!(Config::from_raw(raw), Err(ConfigError::MissingEgressPort));
    }

    #[test]
    fn ingress_port_and_app_ports_come_as_a_pair() {
        let only_ports = RawConfig {
            app_ports: set("9080"),
            ..minimal()
        };
        assert!(matches!(
            Config::from_raw(only_ports),
            Err(ConfigError::AppPortsWithoutIngressPort { .. })
        ));
        let only_ingress = RawConfig {
            proxy_ingress_port: set("15000"),
            ..minimal()
        };
        assert!(matches!(
            Config::from_raw(only_ingress),
            Err(ConfigError::IngressPortWithoutAppPorts { .. })
        ));
        // An app-port list with only empty items is no app ports at all.
        let blank_ports = RawConfig {
            proxy_ingress_port: set("15000"),
            app_ports: set(" , "),
            ..minimal()
        };
        assert!(matches!(
            Config::from_raw(blank_ports),
            Err(ConfigError::IngressPortWithoutAppPorts { .. })
        ));
        let egress_only = Config::from_raw(minimal()).expect("egress only");
        assert_eq!(egress_only.ingress, None);
    }

    #[test]
    fn ports_must_be_positive_integers() {
        for bad in ["0", "-1", "http", "65536", "15001x", "1.5"] {
            let raw = RawConfig {
                proxy_egress_port: set(bad),
                ..minimal()
            };
            assert_eq!(
                Config::from_raw(raw),
                Err(ConfigError::InvalidPort {
                    value: bad.to_owned(),
                    setting: "TEST_SETTING".to_owned()
                }),
                "{bad}"
            );
        }
        let raw = RawConfig {
            egress_ignored_ports: set("22,,0"),
            ..minimal()
        };
        assert!(matches!(
            Config::from_raw(raw),
            Err(ConfigError::InvalidPort { value, .. }) if value == "0"
        ));
        let raw = RawConfig {
            egress_ignored_ports: set(" 22, ,443 "),
            ..minimal()
        };
        assert_eq!(
            Config::from_raw(raw).expect("valid").egress_ignored_ports,
            [22, 443]
        );
    }

    #[test]
    fn ids_must_be_numeric() {
        let raw = RawConfig {
            ignored_uid: set("envoy"),
            ..minimal()
        };
        assert!(matches!(
            Config::from_raw(raw),
            Err(ConfigError::InvalidId { value, .. }) if value == "envoy"
        ));
    }

    #[test]
    fn ignored_ips_are_split_by_family_and_metadata_endpoints_added() {
        let raw = RawConfig {
            egress_ignored_ips: set(" 10.0.0.0/8, fd00::/8,192.168.1.1,::1, 169.254.169.254"),
            ..minimal()
        };
        let config = Config::from_raw(raw).expect("valid");
        assert_eq!(
            config.egress_ignored_ipv4,
            [
                "10.0.0.0/8",
                "192.168.1.1",
                "169.254.169.254",
                "169.254.170.2"
            ]
        );
        assert_eq!(config.egress_ignored_ipv6, ["fd00::/8", "::1"]);

        let none = Config::from_raw(minimal()).expect("valid");
        assert_eq!(
            none.egress_ignored_ipv4,
            ["169.254.170.2", "169.254.169.254"]
        );
        assert!(none.egress_ignored_ipv6.is_empty());
    }

    #[test]
    fn invalid_ips_are_rejected() {
        for bad in [
            "10.0.0.256",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "example.com",
            "10.0.0.0/8/8",
        ] {
            let raw = RawConfig {
                egress_ignored_ips: set(bad),
                ..minimal()
            };
            assert!(
                matches!(Config::from_raw(raw), Err(ConfigError::InvalidIp { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn ipv6_setting() {
        for (value, mode) in [
            ("1", Ipv6Mode::On),
            ("TRUE", Ipv6Mode::On),
            ("0", Ipv6Mode::Off),
            ("off", Ipv6Mode::Off),
            ("auto", Ipv6Mode::Auto),
        ] {
            assert_eq!(Ipv6Mode::from_setting(set(value).as_ref()), Ok(mode));
        }
        assert_eq!(Ipv6Mode::from_setting(None), Ok(Ipv6Mode::Auto));
        assert!(Ipv6Mode::from_setting(set("maybe").as_ref()).is_err());
    }

    #[test]
    fn ports_beyond_the_multiport_limit_are_reported() {
        let many: Vec<String> = (1..=17).map(|p| p.to_string()).collect();
        let raw = RawConfig {
            egress_ignored_ports: set(&many.join(",")),
            ..minimal()
        };
        let config = Config::from_raw(raw).expect("valid");
        assert_eq!(config.egress_ignored_ports.len(), 17);
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("[16, 17]"), "{}", warnings[0]);
        assert!(
            Config::from_raw(minimal())
                .expect("valid")
                .warnings()
                .is_empty()
        );
    }
}
