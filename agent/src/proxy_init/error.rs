//! Why `proxy-init` failed, each with what to do about it.

use super::config::ConfigError;
use super::plan::Family;

/// A `proxy-init` failure.
#[derive(Debug, thiserror::Error)]
pub enum ProxyInitError {
    /// The settings are invalid; nothing was changed.
    #[error("proxy-init configuration: {0}")]
    Config(#[from] ConfigError),

    /// An iptables tool is not installed (or not in `PATH`).
    #[error(
        "`{program}` not found in PATH, needed for the {family} redirect: install the iptables \
         tools in the proxy-init image (Debian/Ubuntu: apt-get install iptables; Alpine: apk add \
         iptables ip6tables; Amazon Linux: dnf install iptables-nft), or set --enable-ipv6 false \
         if only IPv6 is missing"
    )]
    MissingTool {
        program: &'static str,
        family: Family,
    },

    /// The tool ran but the kernel refused: not root, or no NET_ADMIN in this namespace.
    #[error(
        "`{program}` was refused ({detail}): proxy-init must run as root with the NET_ADMIN \
         capability in the task's network namespace. On ECS (EC2 launch type) give the \
         proxy-init container user \"0\" and linuxParameters.capabilities.add [\"NET_ADMIN\"]; \
         Fargate cannot grant NET_ADMIN, use the task definition's proxyConfiguration there"
    )]
    PermissionDenied {
        program: &'static str,
        detail: String,
    },

    /// IPv6 was asked for explicitly but ip6tables does not work here.
    #[error(
        "IPv6 redirection is on (--enable-ipv6 / TASKMESH_ENABLE_IPV6) but `{program}` failed: \
         {detail}; set it to auto or false, or load IPv6 nat support (ip6table_nat / nf_tables)"
    )]
    Ipv6Unavailable {
        program: &'static str,
        detail: String,
    },

    /// Any other failure of an iptables tool.
    #[error("`{program}` failed ({status}): {detail}")]
    Command {
        program: &'static str,
        status: String,
        detail: String,
    },

    /// The tool could not be started or fed for another reason.
    #[error("running `{program}`: {source}")]
    Io {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
}
