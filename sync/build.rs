//! `sqlx::migrate!` embeds the migration files it finds at compile time and
//! watches those, but not the folders: without this, a new migration file
//! would not reach the binary until something else changed.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
