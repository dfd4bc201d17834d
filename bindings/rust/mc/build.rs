// Embeds an rpath to libmc's directory (found by mc-sys through pkg-config) into this crate's
// tests and examples, and passes the directory on to crates that depend on this one: their
// build.rs reads DEP_MC_RS_LIBDIR (cargo's rustc-link-arg reaches only the crate that prints
// it, so a dependent binary needs its own line; see ../README.md). Nothing when mc-sys was
// built `vendored` (libmc is linked statically then).
fn main() {
    if let Ok(dir) = std::env::var("DEP_MC_LIBDIR") {
        println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{dir}");
        println!("cargo:rustc-link-arg-examples=-Wl,-rpath,{dir}");
        println!("cargo:libdir={dir}");
    }
}
