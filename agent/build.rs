//! Link options of the `taskmesh-agent` binary (glibc Linux).
//!
//! - Relative relocations are packed (`-z pack-relative-relocs`, DT_RELR): the dynamic loader
//!   would otherwise read and apply about 41 000 `R_X86_64_RELATIVE` entries (0.95 MiB of
//!   `.rela.dyn`) at every start, and those pages stay resident in every sidecar. Packed, the
//!   table is a few KiB. It needs glibc 2.36 or later at run time, which the agent's image
//!   (distroless `cc-debian12`) has; it is used only when the build machine's own glibc has it
//!   (a binary built on an older system runs there).
//! - On x86_64 (where rustc links with lld), the functions named in `symbol-order.txt` — those
//!   the agent runs to start, load its mesh and serve requests, found with callgrind by
//!   `tests/perf/profile.sh order` — are laid out first and together. Scattered, they touch
//!   about 100 separate 64 KiB windows of the binary's text, and the kernel maps each whole
//!   window (fault-around): ~6 MiB resident for ~1.5 MiB of code run. A stale list (names from
//!   another build) only loses the gain: unknown names are ignored.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=symbol-order.txt");
    println!("cargo:rerun-if-env-changed=TASKMESH_NO_SYMBOL_ORDER");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    if glibc_has_relr() {
        println!("cargo:rustc-link-arg-bin=taskmesh-agent=-Wl,-z,pack-relative-relocs");
    }
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join("symbol-order.txt");
    if var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("TASKMESH_NO_SYMBOL_ORDER").is_empty()
        && order.is_file()
    {
        println!(
            "cargo:rustc-link-arg-bin=taskmesh-agent=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=taskmesh-agent=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether this machine's glibc (the one a native build links against and usually runs on) loads
/// packed relocations: 2.36 or later.
fn glibc_has_relr() -> bool {
    if std::env::var("HOST").ok() != std::env::var("TARGET").ok() {
        return false;
    }
    let Ok(out) = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
    else {
        return false;
    };
    // "glibc 2.36"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text.trim().trim_start_matches("glibc ").split('.');
    let major: u32 = version.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let minor: u32 = version.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (major, minor) >= (2, 36)
}
