// The rpath line bindings/rust/README.md gives: the `mc` crate hands libmc's directory on as
// DEP_MC_RS_LIBDIR (absent with the `vendored` feature, which links libmc statically).
fn main() {
    if let Ok(dir) = std::env::var("DEP_MC_RS_LIBDIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
