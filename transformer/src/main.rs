//! The `taskmesh` binary: parse the command line, run it, exit with its code (0 done, 1 `check`
//! found problems, 2 bad input or usage, 3 AWS or I/O failure). Everything else is in the library.

use clap::Parser;
use taskmesh::cli::{Cli, run};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TASKMESH_LOG")
                // The demo's in-process agents report their own trouble in its table.
                .unwrap_or_else(|_| "warn,taskmesh_agent=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let code = match run::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            run::exit_code(&e)
        }
    };
    std::process::exit(code);
}
