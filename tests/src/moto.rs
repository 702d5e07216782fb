//! A `moto_server` (from the test venv) on a free port: the AWS API backend of the tests.
//!
//! [`MotoServer::start`] spawns `moto_server -H 127.0.0.1 -p <port>`, waits until it answers
//! HTTP, and kills it on drop. It sets nothing process-global: a test hands the server's
//! settings to child processes with [`MotoServer::env`] / [`MotoServer::configure`], or builds
//! its SDK client from [`MotoServer::endpoint`].

use std::process::Command;
use std::time::Duration;

use crate::HarnessError;
use crate::ports::free_port;
use crate::process::ChildProcess;
use crate::venv::venv;

/// Region every test uses.
pub const REGION: &str = "us-east-1";
/// Access key id and secret moto accepts (it checks nothing).
pub const CREDENTIAL: &str = "testing";

/// How long moto gets to start (a cold Python start on a busy 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto server; killed when dropped.
#[derive(Debug)]
pub struct MotoServer {
    process: ChildProcess,
    port: u16,
}

impl MotoServer {
    /// Starts a fresh moto server and waits until it answers HTTP requests. A server that
    /// exits at once (its port was taken between choosing and binding it) is retried on
    /// another port.
    pub fn start() -> Result<MotoServer, HarnessError> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            match Self::start_on(free_port()) {
                Err(HarnessError::NotReady { reason, .. })
                    if attempt < ATTEMPTS && reason.starts_with("exited") =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn start_on(port: u16) -> Result<MotoServer, HarnessError> {
        let moto = venv().tool("moto_server");
        let mut command = Command::new(&moto);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // moto reads no credentials, but keep the developer's AWS setup out of its way.
            .env("AWS_ACCESS_KEY_ID", CREDENTIAL)
            .env("AWS_SECRET_ACCESS_KEY", CREDENTIAL)
            .env("AWS_DEFAULT_REGION", REGION);
        let mut process = ChildProcess::spawn(&format!("moto_server:{port}"), command)?;
        process.wait_for_port(port, START_TIMEOUT)?;
        let mut server = MotoServer { process, port };
        let agent = http_agent();
        let probe = format!("{}/moto-api/data.json", server.endpoint());
        server
            .process
            .wait_until(START_TIMEOUT, "answer HTTP", || {
                agent.get(&probe).call().is_ok()
            })?;
        Ok(server)
    }

    /// `http://localhost:<port>`: the endpoint URL for SDKs and the AWS CLI.
    pub fn endpoint(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// The TCP port moto listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Environment for a child process that talks to this server through any AWS SDK:
    /// `AWS_ENDPOINT_URL`, fixed `testing` credentials and region `us-east-1`, and no
    /// instance-metadata lookups.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", CREDENTIAL.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", CREDENTIAL.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// Applies [`MotoServer::env`] to `command` and removes variables that would point the SDK
    /// elsewhere (profiles, session tokens, config files).
    pub fn configure<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        for key in [
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ] {
            command.env_remove(key);
        }
        command
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .envs(self.env())
    }

    /// Forgets every resource (`POST /moto-api/reset`).
    pub fn reset(&self) -> Result<(), HarnessError> {
        let url = format!("{}/moto-api/reset", self.endpoint());
        match http_agent().post(&url).send_empty() {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(self.tool_error(format!("{url} answered {}", response.status()))),
            Err(err) => Err(self.tool_error(format!("{url}: {err}"))),
        }
    }

    /// Everything moto printed so far (its request log).
    pub fn log(&self) -> String {
        self.process.log()
    }

    fn tool_error(&self, message: String) -> HarnessError {
        HarnessError::Tool {
            tool: self.process.name().to_owned(),
            status: "running".to_owned(),
            message,
            stderr: self.process.log_tail(),
        }
    }
}

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into()
}
