//! `fetch` against a local HTTP server on 127.0.0.1: a clean download, a truncated one that
//! resumes with a Range request, a corrupted one, an unreachable address, and an asset without
//! a pinned checksum.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use ims3_fetch::{Asset, FetchError, Outcome, fetch};
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    /// Announce the full length, send half, close.
    Truncate,
    /// Send the right length of wrong bytes.
    Corrupt,
}

/// Serves `body` at any path; honours `Range: bytes=N-` with 206. Returns the base URL, the
/// mode switch and the log of Range headers seen.
fn serve(body: Vec<u8>) -> (String, Arc<Mutex<Mode>>, Arc<Mutex<Vec<Option<String>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mode = Arc::new(Mutex::new(Mode::Normal));
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let (m, r) = (mode.clone(), ranges.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = v.trim().trim_end_matches('-').parse::<usize>().ok();
                }
            }
            r.lock().unwrap().push(range.map(|v| v.to_string()));
            let mode = *m.lock().unwrap();
            let start = range.unwrap_or(0).min(body.len());
            let mut payload = body[start..].to_vec();
            if mode == Mode::Corrupt {
                payload.iter_mut().for_each(|b| *b ^= 0x5a);
            }
            let status = if range.is_some() { "206 Partial Content" } else { "200 OK" };
            let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", payload.len());
            let _ = stream.write_all(head.as_bytes());
            let send = if mode == Mode::Truncate { &payload[..payload.len() / 2] } else { &payload[..] };
            let _ = stream.write_all(send);
            let _ = stream.flush();
        }
    });
    (format!("http://{addr}"), mode, ranges)
}

fn body() -> Vec<u8> {
    (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn asset(url: &str, sha256: Option<String>) -> Asset {
    Asset { name: "test".into(), file: "sub/blob.bin".into(), url: format!("{url}/blob.bin"), sha256, sha256_prefix: None, md5: None }
}

#[test]
fn clean_download_then_cached() {
    let b = body();
    let (url, _, _) = serve(b.clone());
    let cache = tempfile::tempdir().unwrap();
    let a = asset(&url, Some(sha(&b)));
    let (path, outcome) = fetch(&a, cache.path(), false).unwrap();
    assert_eq!(outcome, Outcome::Downloaded { resumed_from: 0 });
    assert_eq!(std::fs::read(&path).unwrap(), b);
    assert_eq!(fetch(&a, cache.path(), false).unwrap().1, Outcome::AlreadyThere);
}

#[test]
fn truncated_download_resumes_with_a_range_request() {
    let b = body();
    let (url, mode, ranges) = serve(b.clone());
    let cache = tempfile::tempdir().unwrap();
    let a = asset(&url, Some(sha(&b)));
    *mode.lock().unwrap() = Mode::Truncate;
    match fetch(&a, cache.path(), false) {
        Err(FetchError::Truncated { got, want, .. }) => assert_eq!((got, want), (b.len() as u64 / 2, b.len() as u64)),
        other => panic!("expected a truncated download, got {other:?}"),
    }
    *mode.lock().unwrap() = Mode::Normal;
    let (path, outcome) = fetch(&a, cache.path(), false).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b);
    assert!(matches!(outcome, Outcome::Downloaded { .. }));
    assert_eq!(ranges.lock().unwrap().last().unwrap().as_deref(), Some("150000"));
    assert!(!cache.path().join("sub/blob.bin.part").exists());
}

#[test]
fn corrupted_download_is_refused_and_removed() {
    let b = body();
    let (url, mode, _) = serve(b.clone());
    let cache = tempfile::tempdir().unwrap();
    let a = asset(&url, Some(sha(&b)));
    *mode.lock().unwrap() = Mode::Corrupt;
    let e = fetch(&a, cache.path(), false).unwrap_err();
    assert!(matches!(e, FetchError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains(&sha(&b)), "{e}");
    assert!(!cache.path().join("sub/blob.bin.part").exists());
    assert!(!cache.path().join("sub/blob.bin").exists());
}

#[test]
fn unreachable_address_names_the_file_and_where_to_put_it() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // closed again
    let cache = tempfile::tempdir().unwrap();
    let a = asset(&format!("http://127.0.0.1:{port}"), None);
    let e = fetch(&a, cache.path(), false).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, FetchError::Offline { .. }), "{msg}");
    assert!(msg.contains("sub/blob.bin") && msg.contains(&cache.path().join("sub/blob.bin").display().to_string()), "{msg}");
}

#[test]
fn unpinned_asset_is_recorded_then_checked() {
    let b = body();
    let (url, _, _) = serve(b.clone());
    let cache = tempfile::tempdir().unwrap();
    let a = asset(&url, None);
    let (path, _) = fetch(&a, cache.path(), false).unwrap();
    let record = std::fs::read_to_string(cache.path().join("sub/blob.bin.sha256")).unwrap();
    assert!(record.starts_with(&sha(&b)));
    std::fs::write(&path, b"tampered").unwrap();
    let e = fetch(&a, cache.path(), false).unwrap_err();
    assert!(e.to_string().contains("recorded at first download"), "{e}");
}
