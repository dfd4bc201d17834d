// Finds libmc and tells cargo how to link it.
//
// Default: pkg-config (set PKG_CONFIG_PATH to the directory holding mc.pc after `make install`);
// libmc is linked as a shared library, and its directory is handed to dependents as metadata
// (DEP_MC_LIBDIR; the `mc` crate passes it on as DEP_MC_RS_LIBDIR) for an rpath.
//
// Feature `vendored`: builds libmc from the source tree this crate sits in (or MC_SOURCE_DIR)
// with its own Makefile into OUT_DIR, and links libmc.a statically plus the libraries its
// Libs.private names (as libgit2-sys and zstd-sys do): no install, no rpath, no pkg-config.
//
// The bindings are committed (src/bindings.rs) and checked against include/mc.h by generate.sh,
// so neither build needs bindgen nor libclang.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if env::var_os("CARGO_FEATURE_VENDORED").is_some() {
        vendored();
    } else {
        system();
    }
}

fn system() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    match pkg_config::Config::new().atleast_version("0.1").probe("mc") {
        Ok(lib) => {
            for dir in &lib.link_paths {
                println!("cargo:libdir={}", dir.display());
            }
        }
        Err(e) => panic!(
            "mc-sys: libmc not found through pkg-config: {e}\n\
             Set PKG_CONFIG_PATH to the directory holding mc.pc \
             (`make install PREFIX=DIR` installs DIR/lib/pkgconfig/mc.pc), \
             or build with the `vendored` feature."
        ),
    }
}

fn source_dir() -> PathBuf {
    println!("cargo:rerun-if-env-changed=MC_SOURCE_DIR");
    let dir = match env::var_os("MC_SOURCE_DIR") {
        Some(d) => PathBuf::from(d),
        // bindings/rust/mc-sys -> the repository root.
        None => Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../.."),
    };
    if !dir.join("include/mc.h").is_file() || !dir.join("Makefile").is_file() {
        panic!(
            "mc-sys (vendored): {} is not the mc source tree (no include/mc.h or Makefile); \
             set MC_SOURCE_DIR to it",
            dir.display()
        );
    }
    dir
}

fn vendored() {
    let src = source_dir();
    for p in ["src", "include", "Makefile", "pkgconfig"] {
        println!("cargo:rerun-if-changed={}", src.join(p).display());
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("mc-build");
    let pc = out.join("mc.pc");
    let jobs = env::var("NUM_JOBS").unwrap_or_else(|_| "1".into());
    // DEVELOPER=0: no -Werror, so a newer compiler's new warning cannot stop the build.
    let status = Command::new("make")
        .arg("-C")
        .arg(&src)
        .arg(format!("-j{jobs}"))
        .arg(format!("BUILD={}", out.display()))
        .arg("DEVELOPER=0")
        .arg("lib")
        .arg(&pc)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .status()
        .unwrap_or_else(|e| panic!("mc-sys (vendored): cannot run make: {e}"));
    if !status.success() {
        panic!(
            "mc-sys (vendored): `make lib` in {} failed ({status})",
            src.display()
        );
    }
    let libdir = out.join("lib");
    println!("cargo:rustc-link-search=native={}", libdir.display());
    println!("cargo:rustc-link-lib=static=mc");
    for lib in private_libs(&pc) {
        println!("cargo:rustc-link-lib={lib}");
    }
    println!("cargo:include={}", src.join("include").display());
    println!("cargo:vendored=1");
}

/// The `-lNAME` entries of mc.pc's Libs.private: what libmc.a needs from the system.
fn private_libs(pc: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(pc)
        .unwrap_or_else(|e| panic!("mc-sys (vendored): cannot read {}: {e}", pc.display()));
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Libs.private:"))
        .unwrap_or_else(|| panic!("mc-sys (vendored): {} has no Libs.private", pc.display()));
    line.split_whitespace()
        .filter_map(|w| w.strip_prefix("-l"))
        .map(str::to_owned)
        .collect()
}
