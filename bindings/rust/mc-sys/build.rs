// Finds libmc with pkg-config (set PKG_CONFIG_PATH to the directory holding mc.pc). The bindings
// are committed (src/bindings.rs) and checked against include/mc.h by
// scripts/check-rust-bindings.sh, so the build needs neither bindgen nor libclang.
fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    match pkg_config::Config::new().atleast_version("0.1").probe("mc") {
        Ok(lib) => {
            for dir in &lib.link_paths {
                // Lets dependents (tests, examples) embed an rpath: DEP_MC_LIBDIR.
                println!("cargo:libdir={}", dir.display());
            }
        }
        Err(e) => panic!(
            "mc-sys: libmc not found through pkg-config: {e}\n\
                          Set PKG_CONFIG_PATH to the directory holding mc.pc \
                          (`make install PREFIX=DIR` installs DIR/lib/pkgconfig/mc.pc)."
        ),
    }
}
