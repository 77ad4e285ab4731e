//! Crash safety with the real binary: SIGKILL during a stream of writes,
//! restart, and every acknowledged record is there; SIGTERM shuts down cleanly.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tern::model::AnyValue;
use tern::storage::LogQuery;

use crate::support::*;

use tern::loadgen::bench::ServerProc as Proc;

/// Starts the real binary on port 0 over `dir`.
fn spawn_server(dir: &Path) -> Proc {
    tern::loadgen::bench::spawn_server(Path::new(env!("CARGO_BIN_EXE_tern")), dir, &[])
        .expect("tern serve starts")
}

fn stored_seqs(records: &[tern::model::LogRecord]) -> Vec<i64> {
    let mut v: Vec<i64> = records
        .iter()
        .filter_map(|r| match r.attributes.iter().find(|(k, _)| k == "seq") {
            Some((_, AnyValue::Int(i))) => Some(*i),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// Writes batches of 10 logs from 4 concurrent writers until killed;
/// returns the acknowledged sequence numbers.
async fn write_until_killed(p: &mut Proc, kill_after_acks: usize, base: i64) -> Vec<i64> {
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let url = format!("http://{}/v1/logs", p.otlp_http);
    let mut tasks = Vec::new();
    for w in 0..4i64 {
        let acked = acked.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for b in 0.. {
                let first = base + w * 1_000_000 + b * 10;
                let recs = (first..first + 10)
                    .map(|i| log_record("crash test", i))
                    .collect();
                let body = logs_request("crash", recs).encode_to_vec();
                match client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(first..first + 10),
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < kill_after_acks {
        assert!(std::time::Instant::now() < deadline, "writes too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SIGKILL while the writers are still sending.
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let mut v = acked.lock().unwrap().clone();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let mut all_acked = Vec::new();
    for round in 0..2 {
        let mut p = spawn_server(tmp.path());
        let acked = write_until_killed(&mut p, 2_000, round * 100_000_000).await;
        assert!(acked.len() >= 2_000);
        all_acked.extend(acked);
    }
    all_acked.sort();
    // Reopen in-process: the WAL replays into the stores.
    let s = TestServer::start_in(tmp.path(), &[]).await;
    let stored = s
        .srv()
        .stores()
        .logs
        .query(&LogQuery {
            limit: usize::MAX,
            ..Default::default()
        })
        .unwrap();
    let stored = stored_seqs(&stored);
    let missing: Vec<_> = all_acked
        .iter()
        .filter(|s| stored.binary_search(s).is_err())
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but lost after SIGKILL: {missing:?}"
    );
    // Unacknowledged batches may or may not have made it, but nothing is duplicated.
    let mut dedup = stored.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), stored.len(), "replay duplicated records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_keeps_data() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = spawn_server(tmp.path());
    let client = reqwest::Client::new();
    let body = logs_request(
        "term",
        (0..50).map(|i| log_record("before sigterm", i)).collect(),
    )
    .encode_to_vec();
    let r = client
        .post(format!("http://{}/v1/logs", p.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ready = client
        .get(format!("http://{}/readyz", p.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let status = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = p.child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
    // Every store made the data durable, so the WAL was truncated: only an
    // empty segment (carrying the next sequence number) is left.
    let wal: Vec<u64> = std::fs::read_dir(tmp.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert_eq!(
        wal.len(),
        1,
        "segments left after a graceful shutdown: {wal:?}"
    );
    assert!(wal[0] < 1024, "the last segment is empty: {wal:?}");
    let s = TestServer::start_in(tmp.path(), &[]).await;
    let stored = s
        .srv()
        .stores()
        .logs
        .query(&LogQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(stored_seqs(&stored), (0..50).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_second_server_cannot_share_the_data_dir() {
    let s = TestServer::start().await;
    let err = tern::app::start(test_config(&s.dir, &[]))
        .await
        .err()
        .expect("second start fails");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
}

/// Remote-writes one sample per request (series `crash_w{job=w}`, one
/// second apart) from 4 writers until SIGKILL; returns
/// the acknowledged (writer, timestamp) pairs.
async fn remote_write_until_killed(p: &mut Proc, kill_after_acks: usize) -> Vec<(String, i64)> {
    use crate::metrics_store::{snappy, write_request};
    let acked = Arc::new(Mutex::new(Vec::<(String, i64)>::new()));
    let url = format!("http://{}/api/v1/write", p.http);
    // Two hours back, one sample a second: inside retention, never ahead of now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let base = now - 7_200_000;
    let mut tasks = Vec::new();
    for w in 0..4 {
        let acked = acked.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let job = format!("w{w}");
            for i in 0i64.. {
                let t = base + i * 1_000;
                let body = snappy(&write_request(&[("crash_w", &job, &[(t, i as f64)])]));
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "snappy")
                    .header("x-prometheus-remote-write-version", "0.1.0")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        acked.lock().unwrap().push((job.clone(), t))
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return,
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < kill_after_acks {
        assert!(std::time::Instant::now() < deadline, "writes too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let v = acked.lock().unwrap().clone();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_sample() {
    let tmp = tempfile::tempdir().unwrap();
    // The head is written to Parquet every second, so the kill lands
    // between, during and after flushes.
    let settings = ["metrics.head_flush_interval=\"1s\"".to_string()];
    let mut p = tern::loadgen::bench::spawn_server(
        Path::new(env!("CARGO_BIN_EXE_tern")),
        tmp.path(),
        &settings,
    )
    .expect("tern serve starts");
    let acked = remote_write_until_killed(&mut p, 3_000).await;
    let s = TestServer::start_in(tmp.path(), &[]).await;
    for w in 0..4 {
        let job = format!("w{w}");
        let series = s
            .srv()
            .stores()
            .metrics
            .select(
                &[
                    crate::metrics_store::eq("__name__", "crash_w"),
                    crate::metrics_store::eq("job", &job),
                ],
                i64::MIN,
                i64::MAX,
            )
            .unwrap();
        let stored: Vec<i64> = series
            .iter()
            .flat_map(|s| s.samples.iter().map(|x| x.t_ms))
            .collect();
        let mut dedup = stored.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), stored.len(), "{job}: duplicated samples");
        let missing: Vec<_> = acked
            .iter()
            .filter(|(j, t)| *j == job && stored.binary_search(t).is_err())
            .take(10)
            .collect();
        assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    }
}
