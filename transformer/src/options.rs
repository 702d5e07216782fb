//! What `inject` is asked to do: [`InjectOptions`] with the CLI's defaults, shared by the CLI,
//! the Lambda and `taskmesh register`.

/// Which proxy container to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyKind {
    /// The `taskmesh-agent` sidecar (default).
    #[default]
    Agent,
    /// The App Mesh Envoy image shape, kept for parity with existing definitions.
    Envoy,
}

/// How traffic reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Redirect {
    /// ECS task-level `proxyConfiguration` (type `APPMESH`); needs `awsvpc` (default).
    #[default]
    Ecs,
    /// A non-essential `proxy-init` container (agent image, NET_ADMIN) installs the iptables
    /// rules; EC2 only (Fargate refuses NET_ADMIN).
    ProxyInit,
}

/// Default ingress listener port of the proxy.
pub const DEFAULT_INGRESS_PORT: u16 = 15000;
/// Default egress listener port of the proxy.
pub const DEFAULT_EGRESS_PORT: u16 = 15001;
/// Default admin port of the proxy.
pub const DEFAULT_ADMIN_PORT: u16 = 9901;
/// Default UID the proxy runs as, whose traffic the redirect ignores.
pub const DEFAULT_IGNORED_UID: u32 = 1337;
/// Default egress-ignored IPs: the ECS task metadata and EC2 instance metadata endpoints.
pub const DEFAULT_EGRESS_IGNORED_IPS: &str = "169.254.170.2,169.254.169.254";

/// Default image of the X-Ray daemon sidecar `--xray` adds: the X-Ray daemon on Amazon ECR
/// Public, the tag AWS's own examples use (the daemon is in maintenance mode, so `latest` moves
/// only for security fixes); `--xray-image` pins another.
pub const DEFAULT_XRAY_IMAGE: &str = "public.ecr.aws/xray/aws-xray-daemon:latest";

/// Everything `inject` can be told. `Default` gives the CLI's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectOptions {
    /// Virtual node name; default: existing App Mesh wiring, then the family / logical id.
    pub virtual_node: Option<String>,
    /// Mesh name; default: existing App Mesh wiring; otherwise required.
    pub mesh: Option<String>,
    /// Mesh document URI for the agent (`TASKMESH_CONFIG`); required for `--proxy agent`
    /// unless the definition already carries one.
    pub config: Option<String>,
    pub proxy: ProxyKind,
    /// Proxy image; default depends on `proxy`.
    pub image: Option<String>,
    pub redirect: Redirect,
    pub ingress_port: u16,
    pub egress_port: u16,
    pub admin_port: u16,
    pub ignored_uid: u32,
    pub ignored_gid: Option<u32>,
    /// Default: the existing value, else `169.254.170.2,169.254.169.254`.
    pub egress_ignored_ips: Option<Vec<String>>,
    /// Default: the existing value, else none.
    pub egress_ignored_ports: Option<Vec<u16>>,
    /// Default: the TCP container ports of the app containers.
    pub app_ports: Option<Vec<u16>>,
    /// CloudFormation logical ids to transform; empty = every `AWS::ECS::TaskDefinition`.
    pub resources: Vec<String>,
    /// Raise a Fargate task's cpu/memory to the smallest valid pair that fits (`--no-resize`
    /// makes a needed raise an error).
    pub resize: bool,
    /// Trace to AWS X-Ray: run the X-Ray daemon sidecar (the task's own when it has one, else an
    /// added `xray-daemon`), make the proxy wait for it (START) and turn on the proxy's tracing.
    pub xray: bool,
    /// Image of the added X-Ray daemon; default [`DEFAULT_XRAY_IMAGE`]. Only with `xray`.
    pub xray_image: Option<String>,
}

impl Default for InjectOptions {
    fn default() -> Self {
        Self {
            virtual_node: None,
            mesh: None,
            config: None,
            proxy: ProxyKind::Agent,
            image: None,
            redirect: Redirect::Ecs,
            ingress_port: DEFAULT_INGRESS_PORT,
            egress_port: DEFAULT_EGRESS_PORT,
            admin_port: DEFAULT_ADMIN_PORT,
            ignored_uid: DEFAULT_IGNORED_UID,
            ignored_gid: None,
            egress_ignored_ips: None,
            egress_ignored_ports: None,
            app_ports: None,
            resources: Vec::new(),
            resize: true,
            xray: false,
            xray_image: None,
        }
    }
}
