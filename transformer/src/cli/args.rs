//! Command-line arguments. [`InjectArgs`] holds every inject option and converts into
//! [`InjectOptions`], so `taskmesh inject` and `taskmesh register` take exactly the same flags.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::error::{Location, TransformError};
use crate::format::Syntax;
use crate::options::{InjectOptions, ProxyKind, Redirect};

/// `--proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyArg {
    /// The taskmesh-agent sidecar.
    Agent,
    /// The App Mesh Envoy image shape (parity with existing definitions).
    Envoy,
}

/// `--redirect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedirectArg {
    /// Task-level ECS proxyConfiguration (type APPMESH); needs awsvpc.
    Ecs,
    /// A non-essential proxy-init container with NET_ADMIN installs the iptables rules (EC2 only).
    ProxyInit,
}

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    Json,
    Yaml,
}

impl From<OutputArg> for Syntax {
    fn from(o: OutputArg) -> Self {
        match o {
            OutputArg::Json => Syntax::Json,
            OutputArg::Yaml => Syntax::Yaml,
        }
    }
}

/// Every inject option (shared by `inject` and `register`).
#[derive(Debug, Clone, Args)]
pub struct InjectArgs {
    /// Virtual node this task is [default: the existing APPMESH_RESOURCE_ARN /
    /// APPMESH_VIRTUAL_NODE_NAME, then the family (CloudFormation: Family, else the logical id)]
    #[arg(long, value_name = "NAME")]
    pub virtual_node: Option<String>,
    /// Mesh name [default: from the existing App Mesh wiring; otherwise required]
    #[arg(long, value_name = "NAME")]
    pub mesh: Option<String>,
    /// Mesh document the agent reads, as TASKMESH_CONFIG: file:///path, s3://bucket/key,
    /// http(s)://…, or appmesh: [default: the value of a previous injection; otherwise required
    /// for --proxy agent]
    #[arg(long, value_name = "URI")]
    pub config: Option<String>,
    /// Proxy sidecar to add
    #[arg(long, value_enum, default_value_t = ProxyArg::Agent)]
    pub proxy: ProxyArg,
    /// Proxy image [default: public.ecr.aws/taskmesh/taskmesh-agent:<version> for the agent,
    /// public.ecr.aws/appmesh/aws-appmesh-envoy:v1.34.13.3-prod for envoy]
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// How traffic reaches the proxy: ECS proxyConfiguration, or a proxy-init container (EC2 only)
    #[arg(long, value_enum, default_value_t = RedirectArg::Ecs)]
    pub redirect: RedirectArg,
    /// Proxy ingress listener port (ProxyIngressPort)
    #[arg(long, value_name = "PORT", default_value_t = crate::options::DEFAULT_INGRESS_PORT)]
    pub ingress_port: u16,
    /// Proxy egress listener port (ProxyEgressPort)
    #[arg(long, value_name = "PORT", default_value_t = crate::options::DEFAULT_EGRESS_PORT)]
    pub egress_port: u16,
    /// Proxy admin port (health, stats)
    #[arg(long, value_name = "PORT", default_value_t = crate::options::DEFAULT_ADMIN_PORT)]
    pub admin_port: u16,
    /// UID the proxy runs as; its traffic is not redirected (IgnoredUID)
    #[arg(long, value_name = "UID", default_value_t = crate::options::DEFAULT_IGNORED_UID)]
    pub ignored_uid: u32,
    /// GID whose traffic is not redirected (IgnoredGID) [default: the existing value, else none]
    #[arg(long, value_name = "GID")]
    pub ignored_gid: Option<u32>,
    /// Comma list of IPs/CIDRs egress skips (EgressIgnoredIPs) [default: the existing value,
    /// else 169.254.170.2,169.254.169.254]
    #[arg(long, value_name = "LIST")]
    pub egress_ignored_ips: Option<String>,
    /// Comma list of ports egress skips, at most 15 (EgressIgnoredPorts) [default: the existing
    /// value, else none]
    #[arg(long, value_name = "LIST")]
    pub egress_ignored_ports: Option<String>,
    /// Comma list of app ports whose inbound traffic goes through the proxy, at most 15
    /// (AppPorts) [default: the TCP container ports of the app containers]
    #[arg(long, value_name = "LIST")]
    pub app_ports: Option<String>,
    /// CloudFormation logical id of a task definition to transform; repeatable [default: every
    /// AWS::ECS::TaskDefinition]
    #[arg(long = "resource", value_name = "LOGICAL_ID")]
    pub resources: Vec<String>,
    /// Refuse (exit 2) instead of raising a Fargate task's cpu/memory to the smallest valid size
    /// that fits the proxy [default: resize, with a note on stderr]
    #[arg(long)]
    pub no_resize: bool,
    /// Trace to AWS X-Ray: reuse the task's X-Ray daemon (image aws-xray-daemon, name
    /// xray-daemon, or 2000/udp) or add an `xray-daemon` sidecar as the App Mesh examples did
    /// (user = --ignored-uid, 2000/udp, cpu 32, memoryReservation 256, the app's log
    /// configuration); the proxy waits for it (START) and gets ENABLE_ENVOY_XRAY_TRACING=1. The
    /// task role needs AWSXRayDaemonWriteAccess. Eject removes only a daemon inject added
    #[arg(long)]
    pub xray: bool,
    /// Image of the X-Ray daemon --xray adds [default:
    /// public.ecr.aws/xray/aws-xray-daemon:latest]
    #[arg(long, value_name = "IMAGE", requires = "xray")]
    pub xray_image: Option<String>,
}

fn list<T: std::str::FromStr>(
    flag: &str,
    raw: &Option<String>,
) -> Result<Option<Vec<T>>, TransformError> {
    let Some(raw) = raw else { return Ok(None) };
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<T>().map_err(|_| {
                TransformError::usage(
                    Location::file("-"),
                    format!("{flag}: '{s}' is not a valid entry of the comma list '{raw}'"),
                )
            })
        })
        .collect::<Result<Vec<T>, _>>()
        .map(Some)
}

impl InjectArgs {
    /// The library options these flags stand for.
    pub fn to_options(&self) -> Result<InjectOptions, TransformError> {
        Ok(InjectOptions {
            virtual_node: self.virtual_node.clone(),
            mesh: self.mesh.clone(),
            config: self.config.clone(),
            proxy: match self.proxy {
                ProxyArg::Agent => ProxyKind::Agent,
                ProxyArg::Envoy => ProxyKind::Envoy,
            },
            image: self.image.clone(),
            redirect: match self.redirect {
                RedirectArg::Ecs => Redirect::Ecs,
                RedirectArg::ProxyInit => Redirect::ProxyInit,
            },
            ingress_port: self.ingress_port,
            egress_port: self.egress_port,
            admin_port: self.admin_port,
            ignored_uid: self.ignored_uid,
            ignored_gid: self.ignored_gid,
            egress_ignored_ips: list::<String>("--egress-ignored-ips", &self.egress_ignored_ips)?,
            egress_ignored_ports: list::<u16>(
                "--egress-ignored-ports",
                &self.egress_ignored_ports,
            )?,
            app_ports: list::<u16>("--app-ports", &self.app_ports)?,
            resources: self.resources.clone(),
            resize: !self.no_resize,
            xray: self.xray,
            xray_image: self.xray_image.clone(),
        })
    }
}

impl TryFrom<&InjectArgs> for InjectOptions {
    type Error = TransformError;
    fn try_from(a: &InjectArgs) -> Result<Self, Self::Error> {
        a.to_options()
    }
}

/// Where output goes.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Output syntax [default: the input's format]
    #[arg(short = 'o', long = "output", value_enum, value_name = "FORMAT")]
    pub output: Option<OutputArg>,
    /// Rewrite FILE atomically (temporary file in the same directory, then rename); nothing is
    /// written on error [default: print to stdout]
    #[arg(long)]
    pub in_place: bool,
}

/// `taskmesh inject`.
#[derive(Debug, Clone, Args)]
pub struct InjectCommand {
    /// Task definition or CloudFormation template; `-` for stdin
    #[arg(value_name = "FILE|-", default_value = "-")]
    pub file: PathBuf,
    #[command(flatten)]
    pub inject: InjectArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `taskmesh eject` / `taskmesh check`.
#[derive(Debug, Clone, Args)]
pub struct FileArgs {
    /// Task definition or CloudFormation template; `-` for stdin
    #[arg(value_name = "FILE|-", default_value = "-")]
    pub file: PathBuf,
    /// CloudFormation logical id of a task definition; repeatable [default: every
    /// AWS::ECS::TaskDefinition]
    #[arg(long = "resource", value_name = "LOGICAL_ID")]
    pub resources: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `taskmesh mesh …`.
#[derive(Debug, Clone, Subcommand)]
pub enum MeshCommand {
    /// Validate a mesh document (JSON or YAML); every problem is listed with its path.
    Check {
        /// The mesh document; `-` for stdin
        #[arg(value_name = "DOC")]
        doc: PathBuf,
    },
    /// Compile the AWS::AppMesh::* resources of a CloudFormation template into a mesh document.
    FromTemplate {
        /// The CloudFormation template (JSON or YAML); `-` for stdin
        #[arg(value_name = "TEMPLATE")]
        template: PathBuf,
        /// Output syntax
        #[arg(short = 'o', long = "output", value_enum, value_name = "FORMAT", default_value_t = OutputArg::Yaml)]
        output: OutputArg,
        /// A template parameter value (overrides its Default); repeatable
        #[arg(long = "parameter", value_name = "NAME=VALUE")]
        parameters: Vec<String>,
        /// A resource attribute the template cannot know, e.g. Alb.DNSName=my-alb.example.com; repeatable
        #[arg(long = "attribute", value_name = "LOGICAL_ID.ATTRIBUTE=VALUE")]
        attributes: Vec<String>,
        /// Which mesh to compile when the template defines several [default: the only one]
        #[arg(long, value_name = "NAME")]
        mesh: Option<String>,
    },
    /// Draw a mesh document: virtual services, routers, routes with their match and weights,
    /// nodes and their backends (DOT, Mermaid, or SVG through Graphviz).
    Graph {
        /// The mesh document; `-` for stdin
        #[arg(value_name = "DOC")]
        doc: PathBuf,
        /// Output format
        #[arg(long, value_enum, default_value_t = super::graph::GraphFormat::Dot)]
        format: super::graph::GraphFormat,
    },
}
