//! The spool's files: atomic writes, order, eviction.

mod support;

use lineprobe_agent::{Spool, SpoolEntry};
use support::*;

#[test]
fn writes_are_atomic_and_leave_no_partial_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::new(dir.path().join("spool"), 10);
    let mut first = spool_entry();
    spool.put(&first).expect("put");
    // A crash in the middle of a write leaves at most a temporary file,
    // which is never read as a report.
    std::fs::write(
        spool
            .dir()
            .join(format!(".{}.json.123.tmp", first.report.report_id)),
        b"{\"report\": {",
    )
    .expect("partial");
    std::fs::write(spool.dir().join("garbage.json"), b"not json").expect("garbage");
    assert_eq!(spool.ids().expect("ids"), vec![first.report.report_id]);

    // Rewriting replaces the whole entry.
    first.retries = 7;
    spool.put(&first).expect("rewrite");
    let back = spool
        .get(&first.report.report_id)
        .expect("read")
        .expect("present");
    assert_eq!(back, first);
    let names: Vec<String> = std::fs::read_dir(spool.dir())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| {
            std::path::Path::new(n)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("tmp"))
                && !n.contains(".123.")
        })
        .collect();
    assert!(names.is_empty(), "temporary files left: {names:?}");
}

#[test]
fn entries_come_oldest_first_and_the_oldest_is_evicted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::new(dir.path(), 3);
    let entries: Vec<SpoolEntry> = (0..5).map(|_| spool_entry()).collect();
    let mut evicted = 0;
    for e in &entries {
        evicted += spool.put(e).expect("put");
    }
    assert_eq!(evicted, 2);
    assert_eq!(spool.evicted().expect("count"), 2);
    let ids: Vec<_> = entries.iter().map(|e| e.report.report_id).collect();
    assert_eq!(spool.ids().expect("ids"), ids[2..].to_vec());
    spool.evictions_reported(1).expect("told");
    assert_eq!(spool.evicted().expect("count"), 1);
    assert_eq!(spool.purge().expect("purge"), 3);
    assert_eq!(spool.depth().expect("depth"), 0);
    assert_eq!(spool.evicted().expect("count"), 0);
}
