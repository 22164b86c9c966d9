//! Delivery review: a spool that holds something it cannot read or delete
//! keeps working for every other report; processes racing at first start
//! agree on one install id; a collector that asks for signatures gets them.

mod support;

use lineprobe_agent::{Delivery, ProbeOutcome, Spool, SpoolEntry};
use lineprobe_shared::{ReportId, SignatureCheck};
use support::*;

/// An entry that cannot be read (here a folder under an entry's name; on a
/// device, a file a `sudo` run left owned by root) is skipped with a
/// warning: it failed the drain and the next-retry time, so no spooled
/// report was ever sent again.
#[test]
fn an_unreadable_spool_entry_does_not_stop_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::new(dir.path(), 10);
    let stuck = ReportId::new_v7();
    let good = spool_entry();
    spool.put(&good).expect("put");
    std::fs::create_dir(dir.path().join(format!("{stuck}.json"))).expect("mkdir");

    let entries = spool.entries().expect("the other entries are read");
    assert_eq!(entries, vec![good.clone()]);
    assert_eq!(
        spool.next_due().expect("next due"),
        Some(good.next_attempt_at)
    );
    assert_eq!(spool.get(&stuck).expect("skipped"), None);
    assert!(dir.path().join(format!("{stuck}.json")).exists(), "kept");
}

/// A file named for one report that holds another (copied in by hand) is
/// not sent: its delivery would delete the other report's file and leave
/// this one to be sent again at every drain.
#[test]
fn a_spool_file_holding_another_report_than_its_name_is_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::new(dir.path(), 10);
    let original = spool_entry();
    spool.put(&original).expect("put");
    let alias = ReportId::new_v7();
    std::fs::copy(
        dir.path()
            .join(format!("{}.json", original.report.report_id)),
        dir.path().join(format!("{alias}.json")),
    )
    .expect("copy");
    assert_eq!(spool.get(&alias).expect("read"), None);
    assert_eq!(spool.entries().expect("entries"), vec![original]);
}

/// An entry eviction cannot delete is passed over with a warning: it failed
/// every `put` after the report was written (an error for a report that was
/// in fact spooled) and left the spool unbounded from then on. The next
/// oldest is evicted in its place, so the bound still holds.
#[test]
fn an_entry_that_cannot_be_evicted_does_not_fail_the_put() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::new(dir.path(), 2);
    let stuck = ReportId::new_v7();
    std::fs::create_dir(dir.path().join(format!("{stuck}.json"))).expect("mkdir");
    let entries: Vec<SpoolEntry> = (0..4).map(|_| spool_entry()).collect();
    for e in &entries {
        spool.put(e).expect("put");
    }
    let ids: Vec<_> = entries.iter().map(|e| e.report.report_id).collect();
    let left = spool.ids().expect("ids");
    assert_eq!(left, vec![stuck, ids[3]]);
    assert_eq!(spool.evicted().expect("count"), 3);
}

/// Processes that find no install id at once (the daemon's first report
/// and `status`, which shows the terminal ID to the subscriber) end up with
/// the one on disk: each wrote its own and renamed it over the other's, so
/// one went on with an id that was no longer the installation's.
#[test]
fn processes_racing_to_make_the_install_id_agree_on_the_one_on_disk() {
    for _ in 0..50 {
        let dir = tempfile::tempdir().expect("tempdir");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let ids: Vec<String> = (0..4)
            .map(|_| {
                let (root, barrier) = (dir.path().to_owned(), std::sync::Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let state = lineprobe_agent::StateDir::open(root).expect("open");
                    barrier.wait();
                    state.install_id().expect("install id").as_str().to_owned()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        let on_disk = lineprobe_agent::StateDir::open(dir.path())
            .expect("open")
            .install_id()
            .expect("install id");
        assert!(
            ids.iter().all(|id| id == on_disk.as_str()),
            "{ids:?} vs {on_disk:?}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    }
}

/// A 404 to the enrolment (a captive portal's page, or the collector for a
/// moment) marks the endpoint as one that predates signing; when it then
/// answers `signature_required` (it knows this probe's key, or takes only
/// signed reports), the agent enrols and signs. It kept sending unsigned
/// reports, each refused, until the day-long recheck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_asking_for_a_signature_gets_one_after_an_enrolment_404() {
    tokio::time::timeout(std::time::Duration::from_mins(1), async {
        let col_dir = tempfile::tempdir().expect("tempdir");
        let running = start_collector(col_dir.path(), 0, "").await;
        let port = running.public_addr.port();
        let state = tempfile::tempdir().expect("tempdir");
        let config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
        // Enrolled and signing: the collector knows the probe's key.
        let (first, _) = agent(state.path(), config.clone(), 4);
        first.accept_consent().expect("consent");
        first.probe_once().await.expect("probe");
        running.shutdown().await.expect("shutdown");

        // The probe restarts while its enrolment path answers 404.
        let running = start_collector(
            col_dir.path(),
            port,
            "[signing]\nenrol_paths = [\"/elsewhere/enrol\"]\n",
        )
        .await;
        let (agent, _) = agent(state.path(), config, 4);
        let outcome = agent.probe_once().await.expect("probe");
        assert!(
            matches!(outcome, ProbeOutcome::Spooled { .. }),
            "{outcome:?}"
        );
        running.shutdown().await.expect("shutdown");

        // Enrolment answers again: the next report is signed and stored.
        let running = start_collector(col_dir.path(), port, "").await;
        let outcome = agent.probe_once().await.expect("probe");
        assert!(
            matches!(
                outcome,
                ProbeOutcome::Delivered {
                    delivery: Delivery::Stored { .. },
                    ..
                }
            ),
            "{outcome:?}"
        );
        let newest = stored(&running).await.pop().expect("stored");
        let signature = newest
            .envelope
            .as_ref()
            .and_then(|e| e.trust.as_ref())
            .map(|t| t.signature);
        assert_eq!(signature, Some(SignatureCheck::Verified));
        running.shutdown().await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}
