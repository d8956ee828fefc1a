//! Links the kernel at 0x8000_0000 with `kernel.ld`.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-T{dir}/kernel.ld");
    println!("cargo:rerun-if-changed=kernel.ld");
    println!("cargo:rerun-if-changed=src/asm/entry.S");
    println!("cargo:rerun-if-changed=src/asm/kernelvec.S");
}
