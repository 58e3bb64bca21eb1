//! Generates include/ckv.h from src/ffi with cbindgen. The header is committed;
//! CI rebuilds and fails when the committed copy is stale.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    // SONAME follows the C ABI version (ckv_abi_version); see Makefile.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libckv.so.1");
    if std::env::var_os("CARGO_FEATURE_FFI").is_none() {
        return;
    }
    let crate_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let config = match cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")) {
        Ok(c) => c,
        Err(e) => panic!("cbindgen.toml: {e}"),
    };
    let out = crate_dir.join("include").join("ckv.h");
    match cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
    {
        // write_to_file only rewrites the file when its content changed.
        Ok(bindings) => {
            bindings.write_to_file(&out);
        }
        Err(e) => panic!("cbindgen could not generate {}: {e}", out.display()),
    }
}
