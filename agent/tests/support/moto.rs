//! A real moto server (`$TASKMESH_VENV/bin/moto_server`) on a free port, killed on drop.
//! Fails loudly when moto is not installed: run scripts/setup-test-env.sh.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn endpoint(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// Starts moto_server and waits until it answers.
    pub fn start() -> Moto {
        let bin = moto_bin();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e} (run scripts/setup-test-env.sh)",
                    bin.display()
                )
            });
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return moto;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server did not start on port {port} within 30 s");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$TASKMESH_VENV/bin/moto_server`, else `<workspace>/.venv/bin/moto_server`.
pub fn moto_bin() -> PathBuf {
    let venv = std::env::var_os("TASKMESH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv"));
    let bin = venv.join("bin/moto_server");
    assert!(
        bin.exists(),
        "moto_server not found at {} — set TASKMESH_VENV or run scripts/setup-test-env.sh",
        bin.display()
    );
    bin
}

/// A Cloud Map client against `moto` (test credentials, us-east-1).
pub fn service_discovery(moto: &Moto) -> aws_sdk_servicediscovery::Client {
    use aws_sdk_servicediscovery::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_servicediscovery::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    aws_sdk_servicediscovery::Client::from_conf(conf)
}

/// Creates HTTP namespace `ns` with service `svc` in moto; returns the service id.
pub async fn create_service(sd: &aws_sdk_servicediscovery::Client, ns: &str, svc: &str) -> String {
    sd.create_http_namespace()
        .name(ns)
        .send()
        .await
        .expect("CreateHttpNamespace in moto");
    let namespaces = sd.list_namespaces().send().await.expect("ListNamespaces");
    let ns_id = namespaces
        .namespaces()
        .iter()
        .find(|n| n.name() == Some(ns))
        .and_then(|n| n.id())
        .expect("the namespace is listed")
        .to_string();
    sd.create_service()
        .name(svc)
        .namespace_id(ns_id)
        .send()
        .await
        .expect("CreateService")
        .service()
        .and_then(|s| s.id())
        .expect("service id")
        .to_string()
}
