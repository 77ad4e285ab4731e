//! Unit tests of the write-ahead log.

use std::convert::Infallible;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use proptest::prelude::*;
use tempfile::TempDir;

use super::*;

type Records = Vec<(u64, Vec<u8>)>;
/// (seq, (task, index)) as seen by a sink.
type Sunk = (u64, (u64, u64));

/// A 24-byte payload, so that every record takes exactly 40 bytes on disk.
fn fixed_payload(seq: u64) -> Vec<u8> {
    format!("payload-{seq:016}").into_bytes()
}

const FIXED_RECORD: u64 = 40;

/// Options with 100-byte segments: with one record per batch every segment
/// holds exactly 3 fixed-size records (0, 40, 80 -> 120 >= 100 -> rotate).
fn small_segments(dir: &Path) -> WalOptions {
    let mut opts = WalOptions::new(dir);
    opts.segment_bytes = 100;
    opts
}

fn open_wal<T: Send + 'static>(opts: WalOptions) -> (Wal<T>, Records) {
    let mut replayed = Vec::new();
    let wal = Wal::open(
        opts,
        |seq, payload: &[u8]| {
            replayed.push((seq, payload.to_vec()));
            Ok::<(), Infallible>(())
        },
        |_, _| {},
    )
    .unwrap();
    (wal, replayed)
}

fn replay_all(opts: WalOptions) -> Result<Records, WalError> {
    let mut replayed = Vec::new();
    let wal = Wal::<()>::open(
        opts,
        |seq, payload: &[u8]| {
            replayed.push((seq, payload.to_vec()));
            Ok::<(), Infallible>(())
        },
        |_, _| {},
    )?;
    wal.close();
    Ok(replayed)
}

/// Appends fixed payloads for `seqs`, one at a time, checking each seq.
fn append_fixed(wal: &Wal<()>, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        let ticket = wal.append(fixed_payload(seq), ()).unwrap();
        assert_eq!(ticket.wait_blocking().unwrap(), seq);
    }
}

fn expected_fixed(seqs: std::ops::RangeInclusive<u64>) -> Records {
    seqs.map(|s| (s, fixed_payload(s))).collect()
}

fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    list_segments(dir).unwrap()
}

fn segment_names(dir: &Path) -> Vec<u64> {
    segment_files(dir).into_iter().map(|(s, _)| s).collect()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Writes 9 fixed records into segments 1, 4, 7 (3 records each) and
/// returns the path of the last segment.
fn nine_records(dir: &Path) -> PathBuf {
    let (wal, _) = open_wal::<()>(small_segments(dir));
    append_fixed(&wal, 1..=9);
    wal.close();
    assert_eq!(segment_names(dir), vec![1, 4, 7]);
    let last = dir.join(format::segment_file_name(7));
    assert_eq!(fs::metadata(&last).unwrap().len(), 3 * FIXED_RECORD);
    last
}

#[test]
fn append_and_reopen_replays_payloads_in_order() {
    let tmp = TempDir::new().unwrap();
    let payloads: Vec<Vec<u8>> = vec![
        b"first".to_vec(),
        Vec::new(),
        vec![0u8; 1000],
        b"fourth".to_vec(),
        (0..=255).collect(),
    ];
    let (wal, replayed) = open_wal::<()>(WalOptions::new(tmp.path()));
    assert!(replayed.is_empty());
    let tickets: Vec<Ticket> = payloads
        .iter()
        .map(|p| wal.append(p.clone(), ()).unwrap())
        .collect();
    let seqs: Vec<u64> = tickets
        .into_iter()
        .map(|t| t.wait_blocking().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(wal.stats().last_seq, 5);
    assert_eq!(wal.stats().queue_bytes, 0);
    let total: usize = payloads.iter().map(|p| p.len() + RECORD_HEADER_BYTES).sum();
    assert_eq!(wal.stats().disk_bytes, total as u64);
    wal.close();

    let replayed = replay_all(WalOptions::new(tmp.path())).unwrap();
    let expected: Records = (1..).zip(payloads).collect();
    assert_eq!(replayed, expected);
}

#[test]
fn seq_continues_after_reopen() {
    let tmp = TempDir::new().unwrap();
    // Opening and closing an empty WAL twice must not burn sequence numbers.
    assert!(replay_all(WalOptions::new(tmp.path())).unwrap().is_empty());
    assert!(replay_all(WalOptions::new(tmp.path())).unwrap().is_empty());

    let (wal, _) = open_wal::<()>(WalOptions::new(tmp.path()));
    append_fixed(&wal, 1..=3);
    wal.close();

    let (wal, replayed) = open_wal::<()>(WalOptions::new(tmp.path()));
    assert_eq!(replayed, expected_fixed(1..=3));
    assert_eq!(wal.stats().last_seq, 3);
    append_fixed(&wal, 4..=5);
    drop(wal);

    assert_eq!(
        replay_all(WalOptions::new(tmp.path())).unwrap(),
        expected_fixed(1..=5)
    );
}

#[test]
fn rotation_creates_segments_and_replay_crosses_them() {
    let tmp = TempDir::new().unwrap();
    let (wal, _) = open_wal::<()>(small_segments(tmp.path()));
    append_fixed(&wal, 1..=10);
    let stats = wal.stats();
    assert_eq!(stats.segments, 4);
    assert_eq!(stats.disk_bytes, 10 * FIXED_RECORD);
    wal.close();
    assert_eq!(segment_names(tmp.path()), vec![1, 4, 7, 10]);
    assert_eq!(
        replay_all(small_segments(tmp.path())).unwrap(),
        expected_fixed(1..=10)
    );
}

#[test]
fn one_large_batch_is_split_across_segments() {
    let tmp = TempDir::new().unwrap();
    let (wal, _) = open_wal::<()>(small_segments(tmp.path()));
    let tickets: Vec<Ticket> = (1..=50)
        .map(|s| wal.append(fixed_payload(s), ()).unwrap())
        .collect();
    for (seq, ticket) in (1..).zip(tickets) {
        assert_eq!(ticket.wait_blocking().unwrap(), seq);
    }
    wal.close();
    let files = segment_files(tmp.path());
    assert!(files.len() >= 10, "only {} segments", files.len());
    for (_, path) in &files {
        // At most one record beyond segment_bytes.
        assert!(fs::metadata(path).unwrap().len() < 100 + FIXED_RECORD);
    }
    assert_eq!(
        replay_all(small_segments(tmp.path())).unwrap(),
        expected_fixed(1..=50)
    );
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    // Cut 3 bytes off the last payload, and cut inside the last header.
    for keep in [3 * FIXED_RECORD - 3, 2 * FIXED_RECORD + 5] {
        let tmp = TempDir::new().unwrap();
        let last = nine_records(tmp.path());
        fs::OpenOptions::new()
            .write(true)
            .open(&last)
            .unwrap()
            .set_len(keep)
            .unwrap();

        let (wal, replayed) = open_wal::<()>(small_segments(tmp.path()));
        assert_eq!(replayed, expected_fixed(1..=8), "keep {keep}");
        assert_eq!(fs::metadata(&last).unwrap().len(), 2 * FIXED_RECORD);
        assert_eq!(wal.stats().last_seq, 8);
        append_fixed(&wal, 9..=11);
        wal.close();

        assert_eq!(
            replay_all(small_segments(tmp.path())).unwrap(),
            expected_fixed(1..=11)
        );
    }
}

#[test]
fn garbage_tail_is_truncated() {
    let mut huge_len = Vec::new();
    huge_len.extend_from_slice(&u32::MAX.to_le_bytes());
    huge_len.extend_from_slice(&[7u8; 12]);
    let mut valid_crc_wrong_seq = Vec::new();
    format::encode_record(&mut valid_crc_wrong_seq, 42, b"stale");
    let garbages: Vec<Vec<u8>> = vec![
        vec![0xAB; 7],
        vec![0; 64],
        huge_len,
        valid_crc_wrong_seq,
        (0..200u32).map(|i| (i * 31 % 251) as u8).collect(),
    ];
    for garbage in garbages {
        let tmp = TempDir::new().unwrap();
        let last = nine_records(tmp.path());
        fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap()
            .write_all(&garbage)
            .unwrap();

        let (wal, replayed) = open_wal::<()>(small_segments(tmp.path()));
        assert_eq!(replayed, expected_fixed(1..=9), "garbage {garbage:?}");
        assert_eq!(fs::metadata(&last).unwrap().len(), 3 * FIXED_RECORD);
        append_fixed(&wal, 10..=10);
        wal.close();
        assert_eq!(
            replay_all(small_segments(tmp.path())).unwrap(),
            expected_fixed(1..=10)
        );
    }
}

#[test]
fn crc_mismatch_in_last_segment_drops_only_the_tail() {
    let tmp = TempDir::new().unwrap();
    let last = nine_records(tmp.path());
    let mut bytes = fs::read(&last).unwrap();
    let at = (2 * FIXED_RECORD) as usize + RECORD_HEADER_BYTES + 5;
    bytes[at] ^= 0x01;
    fs::write(&last, &bytes).unwrap();
    assert_eq!(
        replay_all(small_segments(tmp.path())).unwrap(),
        expected_fixed(1..=8)
    );
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    fs::write(path, &bytes).unwrap();
}

#[test]
fn corrupt_middle_segment_is_an_error() {
    let tmp = TempDir::new().unwrap();
    nine_records(tmp.path());
    let first = tmp.path().join(format::segment_file_name(1));
    // A payload byte of the second record of the first segment.
    flip_byte(&first, FIXED_RECORD as usize + RECORD_HEADER_BYTES + 3);

    let err = replay_all(small_segments(tmp.path())).unwrap_err();
    assert_eq!(err.code(), "wal_corrupt");
    match err {
        WalError::Corrupt { path, offset, .. } => {
            assert_eq!(path, first);
            assert_eq!(offset, FIXED_RECORD);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Nothing was repaired away: the file and the later segments are intact.
    assert_eq!(fs::metadata(&first).unwrap().len(), 3 * FIXED_RECORD);
    assert_eq!(segment_names(tmp.path()), vec![1, 4, 7]);
    assert!(replay_all(small_segments(tmp.path())).is_err());
}

#[test]
fn torn_middle_segment_and_missing_segment_are_errors() {
    let tmp = TempDir::new().unwrap();
    nine_records(tmp.path());
    let middle = tmp.path().join(format::segment_file_name(4));
    let len = fs::metadata(&middle).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&middle)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    match replay_all(small_segments(tmp.path())).unwrap_err() {
        WalError::Corrupt { path, offset, .. } => {
            assert_eq!(path, middle);
            assert_eq!(offset, 2 * FIXED_RECORD);
        }
        other => panic!("unexpected {other:?}"),
    }

    fs::remove_file(&middle).unwrap();
    match replay_all(small_segments(tmp.path())).unwrap_err() {
        WalError::Corrupt { path, offset, .. } => {
            assert_eq!(path, tmp.path().join(format::segment_file_name(7)));
            assert_eq!(offset, 0);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn truncate_through_deletes_only_fully_covered_segments() {
    let tmp = TempDir::new().unwrap();
    let (wal, _) = open_wal::<()>(small_segments(tmp.path()));
    append_fixed(&wal, 1..=10);
    assert_eq!(segment_names(tmp.path()), vec![1, 4, 7, 10]);

    assert_eq!(wal.truncate_through(2).unwrap(), 0);
    assert_eq!(wal.truncate_through(5).unwrap(), 1);
    assert_eq!(segment_names(tmp.path()), vec![4, 7, 10]);
    assert_eq!(wal.stats().segments, 3);
    assert_eq!(wal.stats().disk_bytes, 7 * FIXED_RECORD);
    assert_eq!(wal.truncate_through(6).unwrap(), 1);
    assert_eq!(wal.truncate_through(6).unwrap(), 0);
    assert_eq!(segment_names(tmp.path()), vec![7, 10]);
    wal.close();

    let (wal, replayed) = open_wal::<()>(small_segments(tmp.path()));
    assert_eq!(replayed, expected_fixed(7..=10));
    append_fixed(&wal, 11..=11);
    wal.close();
    assert_eq!(
        replay_all(small_segments(tmp.path())).unwrap(),
        expected_fixed(7..=11)
    );
}

#[test]
fn truncate_through_reclaims_a_covered_active_segment() {
    let tmp = TempDir::new().unwrap();
    let (wal, _) = open_wal::<()>(small_segments(tmp.path()));
    append_fixed(&wal, 1..=10);
    // The active segment [10] is covered: it is rotated and deleted too.
    assert_eq!(wal.truncate_through(10).unwrap(), 4);
    assert_eq!(segment_names(tmp.path()), vec![11]);
    let stats = wal.stats();
    assert_eq!((stats.segments, stats.disk_bytes), (1, 0));
    // An empty active segment is never rotated again.
    assert_eq!(wal.truncate_through(u64::MAX).unwrap(), 0);
    assert_eq!(segment_names(tmp.path()), vec![11]);
    wal.close();

    // The empty segment remembers where the sequence continues.
    let (wal, replayed) = open_wal::<()>(small_segments(tmp.path()));
    assert!(replayed.is_empty());
    assert_eq!(wal.stats().last_seq, 10);
    append_fixed(&wal, 11..=12);
    wal.close();
    assert_eq!(
        replay_all(small_segments(tmp.path())).unwrap(),
        expected_fixed(11..=12)
    );
}

#[test]
fn truncate_through_is_safe_concurrently_with_appends() {
    let tmp = TempDir::new().unwrap();
    let mut opts = WalOptions::new(tmp.path());
    opts.segment_bytes = 200;
    let (wal, _) = open_wal::<()>(opts.clone());
    let wal = Arc::new(wal);
    let total = 600u64;
    let truncator = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || {
            let mut deleted = 0;
            while wal.stats().last_seq < total {
                let through = wal.stats().last_seq.saturating_sub(25);
                deleted += wal.truncate_through(through).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
            deleted
        })
    };
    for chunk in (1..=total).collect::<Vec<_>>().chunks(10) {
        let tickets: Vec<Ticket> = chunk
            .iter()
            .map(|&s| wal.append(fixed_payload(s), ()).unwrap())
            .collect();
        for (&seq, ticket) in chunk.iter().zip(tickets) {
            assert_eq!(ticket.wait_blocking().unwrap(), seq);
        }
    }
    let deleted = truncator.join().unwrap();
    assert!(deleted > 0);
    // A final, deterministic truncation: the first surviving segment (at
    // most 5 records of 40 bytes) is the one holding `total - 24`.
    wal.truncate_through(total - 25).unwrap();
    assert_eq!(wal.stats().segments, segment_files(tmp.path()).len());
    wal.shutdown();
    drop(wal);

    let replayed = replay_all(opts).unwrap();
    let first = replayed.first().map(|(s, _)| *s).unwrap();
    assert!(
        first <= total - 24 && first + 5 > total - 24,
        "first {first}"
    );
    assert_eq!(replayed, expected_fixed(first..=total));
}

#[test]
fn busy_when_queue_is_full_and_sink_blocks_then_group_commit() {
    let tmp = TempDir::new().unwrap();
    let mut opts = WalOptions::new(tmp.path());
    opts.max_queue_bytes = 100; // 3 records of 26 bytes fit, 4 do not
    let (sunk_tx, sunk_rx) = mpsc::channel();
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let wal = Wal::open(
        opts,
        |_, _: &[u8]| Ok::<(), Infallible>(()),
        move |seq, item: u64| {
            assert_eq!(seq, item);
            sunk_tx.send(seq).unwrap();
            // Blocks until released; once the gate is dropped, never again.
            let _ = gate_rx.recv();
        },
    )
    .unwrap();
    // Declared after `wal`, so a failed assertion releases the sink before
    // the WAL's drop waits for the writer.
    let gate_tx = gate_tx;

    let t1 = wal.append(vec![1; 10], 1).unwrap();
    assert_eq!(sunk_rx.recv().unwrap(), 1); // the writer is now stuck in the sink
    assert_eq!(wal.stats().last_seq, 1);
    let queued: Vec<Ticket> = (2..=4)
        .map(|i| wal.append(vec![1; 10], i).unwrap())
        .collect();
    assert_eq!(wal.stats().queue_bytes, 78);
    assert_eq!(wal.stats().disk_bytes, 26);
    assert!(matches!(wal.append(vec![1; 10], 99), Err(WalError::Busy)));
    assert!(matches!(wal.append(vec![1; 7], 99), Err(WalError::Busy)));
    // 78 + 16 + 6 = 100 still fits; the sink will see it as seq 5.
    let t5 = wal.append(vec![1; 6], 5).unwrap();
    assert!(matches!(wal.append(Vec::new(), 99), Err(WalError::Busy)));
    // A record that could never fit is not "busy" but too large.
    let err = wal.append(vec![0; 85], 99).unwrap_err();
    assert_eq!(err.code(), "wal_too_large");
    let syncs_before = wal.shared.counters.syncs.load(Ordering::SeqCst);
    assert_eq!(syncs_before, 1);

    drop(gate_tx);
    assert_eq!(t1.wait_blocking().unwrap(), 1);
    for (seq, ticket) in (2..).zip(queued) {
        assert_eq!(ticket.wait_blocking().unwrap(), seq);
    }
    assert_eq!(t5.wait_blocking().unwrap(), 5);
    // The four queued records shared one write and one fsync.
    assert_eq!(wal.shared.counters.syncs.load(Ordering::SeqCst), 2);
    assert_eq!(
        wal.append(vec![1; 10], 6).unwrap().wait_blocking().unwrap(),
        6
    );
    assert_eq!(wal.shared.counters.syncs.load(Ordering::SeqCst), 3);
    wal.close();
    assert_eq!(sunk_rx.iter().collect::<Vec<_>>(), vec![2, 3, 4, 5, 6]);
}

#[test]
fn full_when_disk_budget_is_exhausted() {
    let tmp = TempDir::new().unwrap();
    let mut opts = WalOptions::new(tmp.path());
    opts.max_disk_bytes = 200; // 3 records of 66 bytes fit, 4 do not
    let (wal, _) = open_wal::<()>(opts);
    for seq in 1..=3 {
        let ticket = wal.append(vec![7; 50], ()).unwrap();
        assert_eq!(ticket.wait_blocking().unwrap(), seq);
    }
    assert_eq!(wal.stats().disk_bytes, 198);
    let err = wal.append(vec![7; 50], ()).unwrap_err();
    assert!(matches!(err, WalError::Full), "{err:?}");
    assert_eq!(err.code(), "wal_full");
    // Not even an empty record (16 bytes) fits.
    assert!(wal.append(Vec::new(), ()).is_err());

    // Once the stores catch up, truncation frees the budget again.
    assert_eq!(wal.truncate_through(3).unwrap(), 1);
    assert_eq!(wal.stats().disk_bytes, 0);
    // Queued records count too: three fit, the fourth does not.
    let tickets: Vec<Ticket> = (0..3)
        .map(|_| wal.append(vec![7; 50], ()).unwrap())
        .collect();
    assert!(matches!(wal.append(vec![7; 50], ()), Err(WalError::Full)));
    let seqs: Vec<u64> = tickets
        .into_iter()
        .map(|t| t.wait_blocking().unwrap())
        .collect();
    assert_eq!(seqs, vec![4, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_distinct_increasing_seqs() {
    let tmp = TempDir::new().unwrap();
    let sunk: Arc<Mutex<Vec<Sunk>>> = Arc::default();
    let sink_log = Arc::clone(&sunk);
    let wal = Wal::open(
        WalOptions::new(tmp.path()),
        |_, _: &[u8]| Ok::<(), Infallible>(()),
        move |seq, item: (u64, u64)| sink_log.lock().push((seq, item)),
    )
    .unwrap();
    let wal = Arc::new(wal);
    let (tasks, per_task) = (16u64, 100u64);
    let mut handles = Vec::new();
    for task in 0..tasks {
        let wal = Arc::clone(&wal);
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..per_task {
                let payload = format!("{task}:{i}").into_bytes();
                let seq = wal.append(payload, (task, i)).unwrap().await.unwrap();
                seqs.push(((task, i), seq));
            }
            seqs
        }));
    }
    let mut acked = Vec::new();
    for handle in handles {
        let seqs = handle.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0].1 < w[1].1));
        acked.extend(seqs);
    }
    let total = tasks * per_task;
    assert_eq!(wal.stats().last_seq, total);

    // The sink saw every record once, in sequence order, with its item.
    let sunk = sunk.lock().clone();
    assert_eq!(
        sunk.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    acked.sort_by_key(|(_, seq)| *seq);
    let acked: Vec<Sunk> = acked.into_iter().map(|(item, seq)| (seq, item)).collect();
    assert_eq!(acked, sunk);
    wal.shutdown();

    let replayed = replay_all(WalOptions::new(tmp.path())).unwrap();
    let expected: Records = sunk
        .iter()
        .map(|(seq, (task, i))| (*seq, format!("{task}:{i}").into_bytes()))
        .collect();
    assert_eq!(replayed, expected);
}

fn drains(policy: SyncPolicy, by_drop: bool) {
    let tmp = TempDir::new().unwrap();
    let mut opts = WalOptions::new(tmp.path());
    opts.sync = policy;
    opts.segment_bytes = 1000;
    let sunk: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sink_log = Arc::clone(&sunk);
    let wal = Wal::open(
        opts.clone(),
        |_, _: &[u8]| Ok::<(), Infallible>(()),
        move |seq, item: u64| {
            assert_eq!(seq, item);
            // A slow sink keeps records queued at close time.
            std::thread::sleep(Duration::from_micros(50));
            sink_log.lock().push(seq);
        },
    )
    .unwrap();
    let tickets: Vec<Ticket> = (1..=200)
        .map(|s| wal.append(fixed_payload(s), s).unwrap())
        .collect();
    if by_drop {
        drop(wal);
    } else {
        wal.close();
    }
    assert_eq!(*sunk.lock(), (1..=200).collect::<Vec<_>>(), "{policy:?}");
    for (seq, ticket) in (1..).zip(tickets) {
        assert_eq!(ticket.wait_blocking().unwrap(), seq);
    }
    assert_eq!(replay_all(opts).unwrap(), expected_fixed(1..=200));
}

#[test]
fn close_drains_the_queue() {
    for policy in [
        SyncPolicy::Batch,
        SyncPolicy::Interval(Duration::from_secs(3600)),
        SyncPolicy::Never,
    ] {
        drains(policy, false);
    }
}

#[test]
fn drop_drains_the_queue() {
    drains(SyncPolicy::Never, true);
    drains(SyncPolicy::Batch, true);
}

#[test]
fn append_after_shutdown_is_closed() {
    let tmp = TempDir::new().unwrap();
    let (wal, _) = open_wal::<()>(WalOptions::new(tmp.path()));
    append_fixed(&wal, 1..=1);
    wal.shutdown();
    wal.shutdown();
    let err = wal.append(b"late".to_vec(), ()).unwrap_err();
    assert!(matches!(err, WalError::Closed));
    assert_eq!(err.code(), "wal_closed");
    assert!(matches!(wal.truncate_through(1), Err(WalError::Closed)));
    // The directory lock is released by shutdown, not only by drop.
    assert_eq!(
        replay_all(WalOptions::new(tmp.path())).unwrap(),
        expected_fixed(1..=1)
    );
}

#[test]
fn write_failure_fails_tickets_and_the_wal_stays_failed() {
    let tmp = TempDir::new().unwrap();
    let sunk: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sink_log = Arc::clone(&sunk);
    let wal = Wal::open(
        WalOptions::new(tmp.path()),
        |_, _: &[u8]| Ok::<(), Infallible>(()),
        move |seq, _: ()| sink_log.lock().push(seq),
    )
    .unwrap();
    assert_eq!(
        wal.append(fixed_payload(1), ())
            .unwrap()
            .wait_blocking()
            .unwrap(),
        1
    );

    wal.shared
        .counters
        .fail_next_write
        .store(true, Ordering::SeqCst);
    let err = wal
        .append(fixed_payload(2), ())
        .unwrap()
        .wait_blocking()
        .unwrap_err();
    assert_eq!(err.code(), "wal_io");
    assert!(err.to_string().contains("injected write failure"), "{err}");
    // Sticky: no further append is accepted, and the sink never saw seq 2.
    let err = wal.append(fixed_payload(2), ()).unwrap_err();
    assert!(matches!(err, WalError::Io { .. }), "{err:?}");
    assert_eq!(wal.stats().last_seq, 1);
    assert_eq!(*sunk.lock(), vec![1]);
    wal.close();

    let (wal, replayed) = open_wal::<()>(WalOptions::new(tmp.path()));
    assert_eq!(replayed, expected_fixed(1..=1));
    append_fixed(&wal, 2..=2);
}

#[test]
fn interval_policy_fsyncs_in_the_background_and_never_does_not() {
    let tmp = TempDir::new().unwrap();
    let mut opts = WalOptions::new(tmp.path().join("interval"));
    opts.sync = SyncPolicy::Interval(Duration::from_millis(30));
    let (wal, _) = open_wal::<()>(opts);
    append_fixed(&wal, 1..=1);
    wait_until("background fsync", || {
        wal.shared.counters.syncs.load(Ordering::SeqCst) >= 1
    });
    wal.close();

    let mut opts = WalOptions::new(tmp.path().join("never"));
    opts.sync = SyncPolicy::Never;
    let (wal, _) = open_wal::<()>(opts);
    append_fixed(&wal, 1..=3);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(wal.shared.counters.syncs.load(Ordering::SeqCst), 0);
    let shared = Arc::clone(&wal.shared);
    wal.close();
    // Closing fsyncs.
    assert_eq!(shared.counters.syncs.load(Ordering::SeqCst), 1);
}

#[test]
fn replay_error_is_returned() {
    let tmp = TempDir::new().unwrap();
    let (wal, _) = open_wal::<()>(WalOptions::new(tmp.path()));
    append_fixed(&wal, 1..=3);
    wal.close();

    let mut seen = Vec::new();
    let err = Wal::<()>::open(
        WalOptions::new(tmp.path()),
        |seq, _: &[u8]| {
            seen.push(seq);
            if seq == 2 {
                Err(io::Error::other("store rejected record"))
            } else {
                Ok(())
            }
        },
        |_, _| {},
    )
    .unwrap_err();
    assert_eq!(seen, vec![1, 2]);
    assert_eq!(err.code(), "wal_replay");
    assert!(err.to_string().contains("store rejected record"), "{err}");
}

#[test]
fn a_directory_is_opened_by_one_wal_at_a_time() {
    let tmp = TempDir::new().unwrap();
    let (wal, _) = open_wal::<()>(WalOptions::new(tmp.path()));
    let err = Wal::<()>::open(
        WalOptions::new(tmp.path()),
        |_, _: &[u8]| Ok::<(), Infallible>(()),
        |_, _| {},
    )
    .unwrap_err();
    match err {
        WalError::Io { source, .. } => assert_eq!(source.kind(), io::ErrorKind::WouldBlock),
        other => panic!("unexpected {other:?}"),
    }
    wal.close();
    assert!(replay_all(WalOptions::new(tmp.path())).is_ok());
}

#[test]
fn sink_panic_closes_the_wal_without_hanging_tickets() {
    let tmp = TempDir::new().unwrap();
    let wal = Wal::open(
        WalOptions::new(tmp.path()),
        |_, _: &[u8]| Ok::<(), Infallible>(()),
        |seq, _: ()| assert_ne!(seq, 2, "sink refuses seq 2"),
    )
    .unwrap();
    assert_eq!(
        wal.append(fixed_payload(1), ())
            .unwrap()
            .wait_blocking()
            .unwrap(),
        1
    );
    let err = wal
        .append(fixed_payload(2), ())
        .unwrap()
        .wait_blocking()
        .unwrap_err();
    assert!(matches!(err, WalError::Closed), "{err:?}");
    wait_until("the wal to close", || {
        matches!(wal.append(Vec::new(), ()), Err(WalError::Closed))
    });
    drop(wal);
    // Seq 2 was durable before the sink ran, so it is replayed.
    assert_eq!(
        replay_all(WalOptions::new(tmp.path())).unwrap(),
        expected_fixed(1..=2)
    );
}

#[test]
fn error_codes_are_distinct_and_messages_are_lowercase() {
    let errors = [
        WalError::io(Path::new("/x"), io::Error::other("boom")),
        WalError::Corrupt {
            path: PathBuf::from("/x"),
            offset: 3,
            reason: "crc mismatch".to_string(),
        },
        WalError::Busy,
        WalError::Full,
        WalError::Closed,
        WalError::TooLarge { len: 2, max: 1 },
        WalError::Replay(Box::new(io::Error::other("bad"))),
    ];
    let mut codes: Vec<&str> = errors.iter().map(WalError::code).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
    for err in &errors {
        let msg = err.to_string();
        assert!(msg.starts_with(|c: char| c.is_ascii_lowercase()), "{msg}");
        assert!(!msg.ends_with('.'), "{msg}");
    }
}

#[test]
fn segment_names_round_trip() {
    assert_eq!(format::segment_file_name(1), "00000000000000000001.wal");
    for seq in [1, 42, u64::MAX] {
        assert_eq!(
            format::parse_segment_name(&format::segment_file_name(seq)),
            Some(seq)
        );
    }
    for name in [
        "LOCK",
        "1.wal",
        "0000000000000000000x.wal",
        "00000000000000000001.tmp",
    ] {
        assert_eq!(format::parse_segment_name(name), None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn random_payloads_round_trip_through_reopen(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..40),
        segment_bytes in 1u64..800,
        wait_each in any::<bool>(),
    ) {
        let tmp = TempDir::new().unwrap();
        let mut opts = WalOptions::new(tmp.path());
        opts.segment_bytes = segment_bytes;
        let (wal, _) = open_wal::<()>(opts.clone());
        let mut tickets = Vec::new();
        for payload in &payloads {
            let ticket = wal.append(payload.clone(), ()).unwrap();
            if wait_each {
                tickets.push(Ok(ticket.wait_blocking().unwrap()));
            } else {
                tickets.push(Err(ticket));
            }
        }
        let seqs: Vec<u64> = tickets
            .into_iter()
            .map(|t| t.unwrap_or_else(|t| t.wait_blocking().unwrap()))
            .collect();
        prop_assert_eq!(seqs, (1..=payloads.len() as u64).collect::<Vec<_>>());
        wal.close();

        let (wal, replayed) = open_wal::<()>(opts.clone());
        let expected: Records = (1..).zip(payloads.iter().cloned()).collect();
        prop_assert_eq!(&replayed, &expected);
        let next = wal.append(b"next".to_vec(), ()).unwrap().wait_blocking().unwrap();
        prop_assert_eq!(next, payloads.len() as u64 + 1);
        wal.close();

        let mut expected = expected;
        expected.push((payloads.len() as u64 + 1, b"next".to_vec()));
        prop_assert_eq!(replay_all(opts).unwrap(), expected);
    }
}
