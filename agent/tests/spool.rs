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
    // A fresh report takes both to tell, written with them.
    let mut fresh = spool_entry();
    assert_eq!(spool.hold_telling_evictions(&mut fresh).expect("held"), 2);
    assert_eq!(fresh.report.spool_evicted, Some(2));
    assert_eq!(spool.evicted().expect("count"), 0);
    let held = spool.get(&fresh.report.report_id).expect("read");
    assert_eq!(held.expect("held").report.spool_evicted, Some(2));
    let mut next = spool_entry();
    assert_eq!(spool.hold_telling_evictions(&mut next).expect("held"), 0);
    assert_eq!(next.report.spool_evicted, None);
    assert_eq!(spool.purge().expect("purge"), 5);
    assert_eq!(spool.depth().expect("depth"), 0);
    assert_eq!(spool.evicted().expect("count"), 0);
}

#[test]
fn the_bound_holds_when_the_entry_written_is_the_oldest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::new(dir.path(), 3);
    let entries: Vec<SpoolEntry> = (0..4).map(|_| spool_entry()).collect();
    for e in &entries[..3] {
        assert_eq!(spool.put(e).expect("put"), 0);
    }
    // A fourth report on its way is held without eviction; meanwhile the
    // oldest comes back from a failed retry (or a report is made after the
    // clock was put back, its id the oldest).
    spool.hold(&entries[3]).expect("hold");
    let mut retried = entries[0].clone();
    retried.retries = 1;
    assert_eq!(spool.put(&retried).expect("put"), 1);
    let ids: Vec<_> = entries.iter().map(|e| e.report.report_id).collect();
    assert_eq!(
        spool.ids().expect("ids"),
        vec![ids[0], ids[2], ids[3]],
        "the oldest other entry makes room"
    );
    assert_eq!(spool.depth().expect("depth"), 3, "one over the bound");
    assert_eq!(spool.evicted().expect("count"), 1);
}

/// Writes `entry` as a newer agent version might: a report schema and a
/// field this version does not know.
fn write_newer(spool: &Spool, entry: &SpoolEntry, schema: u32) -> Vec<u8> {
    let mut json = serde_json::to_value(entry).expect("json");
    json["report"]["schema"] = schema.into();
    json["report"]["radio"] = serde_json::json!({"kind": "5g-sa", "band": "n78"});
    json["report"]["spool_evicted"] = 4.into();
    json["signed_by"] = "a key this version has never heard of".into();
    let bytes = serde_json::to_vec(&json).expect("bytes");
    std::fs::create_dir_all(spool.dir()).expect("mkdir");
    std::fs::write(
        spool.dir().join(format!("{}.json", entry.report.report_id)),
        &bytes,
    )
    .expect("write");
    bytes
}

#[test]
fn entries_of_a_newer_version_are_kept_unsent_and_count_against_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::new(dir.path().join("spool"), 3);
    let (first, second) = (spool_entry(), spool_entry());
    let first_bytes = write_newer(&spool, &first, 2);
    let second_bytes = write_newer(&spool, &second, 1);
    let path = |e: &SpoolEntry| spool.dir().join(format!("{}.json", e.report.report_id));

    // Not read as this version's, not deleted for it, not due.
    for e in [&first, &second] {
        assert_eq!(spool.get(&e.report.report_id).expect("get"), None);
    }
    assert!(spool.entries().expect("entries").is_empty());
    assert_eq!(spool.next_due().expect("due"), None);
    assert_eq!(
        spool.newer().expect("newer"),
        vec![first.report.report_id, second.report.report_id]
    );
    assert_eq!(std::fs::read(path(&first)).expect("kept"), first_bytes);
    assert_eq!(std::fs::read(path(&second)).expect("kept"), second_bytes);
    // The evictions they carry are untold still.
    assert_eq!(spool.untold_evictions().expect("untold"), 8);

    // They take places of the bound: the oldest of them makes room first,
    // counted with what it carried.
    let own = spool_entry();
    assert_eq!(spool.put(&own).expect("put"), 0);
    assert_eq!(spool.depth().expect("depth"), 3);
    let next = spool_entry();
    assert_eq!(spool.put(&next).expect("put"), 1);
    assert!(!path(&first).exists(), "the oldest was not evicted");
    assert_eq!(std::fs::read(path(&second)).expect("kept"), second_bytes);
    assert_eq!(spool.evicted().expect("count"), 1 + 4);
    assert_eq!(
        spool.ids().expect("ids"),
        vec![
            second.report.report_id,
            own.report.report_id,
            next.report.report_id
        ]
    );
    // And never more than the bound, however many this version adds.
    for _ in 0..3 {
        spool.put(&spool_entry()).expect("put");
    }
    assert_eq!(spool.depth().expect("depth"), 3);
    assert!(spool.newer().expect("newer").is_empty());
}

#[test]
fn a_damaged_entry_is_still_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::new(dir.path(), 3);
    let entry = spool_entry();
    spool.put(&entry).expect("put");
    let path = spool.dir().join(format!("{}.json", entry.report.report_id));
    std::fs::write(&path, b"{\"report\": {\"sch").expect("damage");
    assert_eq!(spool.get(&entry.report.report_id).expect("get"), None);
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_agent_leaves_a_newer_ones_reports_alone_and_shows_them() {
    let state = tempfile::tempdir().expect("tempdir");
    let (agent, _) = agent(state.path(), agent_config(&[dead_endpoint()], None), 3);
    agent.accept_consent().expect("consent");
    let entry = spool_entry();
    let bytes = write_newer(agent.spool(), &entry, 2);
    let summary = agent.flush_spool().await.expect("flush");
    assert_eq!((summary.delivered, summary.refused), (0, 0), "{summary:?}");
    assert_eq!(summary.waiting, 1);
    assert_eq!(
        std::fs::read(
            agent
                .spool()
                .dir()
                .join(format!("{}.json", entry.report.report_id))
        )
        .expect("kept"),
        bytes
    );
    let status = agent.status().expect("status");
    assert_eq!((status.spool_depth, status.spool_newer), (1, 1));
    assert!(
        status
            .to_string()
            .contains("1 of them written by a newer agent version"),
        "{status}"
    );
}

/// The eviction tally is read and rewritten by every process on the state
/// folder (the daemon, a scheduled `probe`): two spools over one folder,
/// each with its own in-process lock, count every eviction once, and
/// every eviction counted is taken by exactly one report or left in the
/// tally.
#[test]
fn the_eviction_tally_counts_every_eviction_of_two_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spools = [
        Spool::new(dir.path().join("spool"), 1_000),
        Spool::new(dir.path().join("spool"), 1_000),
    ];
    let taken: u64 = std::thread::scope(|scope| {
        let threads: Vec<_> = spools
            .iter()
            .flat_map(|spool| [spool, spool])
            .map(|spool| {
                scope.spawn(move || {
                    let mut taken = 0;
                    for i in 0..100 {
                        spool.evictions_untold(1).expect("counted");
                        if i % 10 == 9 {
                            let mut entry = spool_entry();
                            let n = spool.hold_telling_evictions(&mut entry).expect("held");
                            assert_eq!(entry.report.spool_evicted.unwrap_or(0), n);
                            taken += n;
                        }
                    }
                    taken
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("thread")).sum()
    });
    assert!(taken > 0);
    assert_eq!(taken + spools[1].evicted().expect("read"), 400);
    assert_eq!(spools[0].untold_evictions().expect("read"), 400);
}
