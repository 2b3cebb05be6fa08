//! Rebuilds the crate when a migration is added or changed.
//!
//! `sqlx::migrate!` embeds `migrations/` at compile time, and Cargo reruns a proc macro only
//! when a Rust source changes: without this, a new migration file would be left out of an
//! incremental build, and the binary and the tests would migrate to the previous schema. This
//! is the build script sqlx recommends (`sqlx migrate build-script`).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
