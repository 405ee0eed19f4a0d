//! Link options for the guest binary only.
//!
//! The static agent is a static-pie (ASLR for PID 1), so the kernel maps it anywhere and glibc's
//! `_dl_relocate_static_pie` applies its relative relocations at start-up. As plain RELA they
//! took 0.48 MB of the file (`.rela.dyn`, 24 bytes per pointer); `-z pack-relative-relocs`
//! (binutils >= 2.38, glibc >= 2.36: Debian 12 has 2.40 and 2.36) packs them as DT_RELR
//! bitmaps, a few KB, and the binary stays position independent. Only for `+crt-static`
//! builds (the Makefile's guest build): the dynamic host builds of the same crate are left as
//! the toolchain makes them.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let static_crt = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .map(|f| f.split(',').any(|f| f == "crt-static"))
        .unwrap_or(false);
    if static_crt {
        println!("cargo:rustc-link-arg-bin=cvm-agent=-Wl,-z,pack-relative-relocs");
    }
}
