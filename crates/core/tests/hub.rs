//! Model resolution: local paths, the Hugging Face cache offline, and a real
//! download through hf-hub from a stand-in hub on loopback (the same HTTP
//! API huggingface.co serves: repository info, then ranged file requests),
//! after which the model loads and resolves offline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mlx_harmony_core::generate::LoadedModel;
use mlx_harmony_core::hub::{HubOptions, is_repo_id, resolve_model};
use mlx_harmony_core::loading;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/parity")
        .join(name)
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Serves `files` as the repository `owner/tiny-llama` at COMMIT; records
/// each request line and its Authorization header.
fn fake_hub(files: Vec<(String, Vec<u8>)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut range = None;
            let mut auth = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("range: bytes=") {
                    let (a, b) = v.trim().split_once('-').unwrap();
                    range = Some((a.parse::<usize>().unwrap(), b.parse::<usize>().ok()));
                }
                if lower.starts_with("authorization:") {
                    auth = line.trim().to_string();
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            seen.lock().unwrap().push(format!("{path} {auth}"));
            let (status, headers, body) = if path.starts_with("/api/models/owner/tiny-llama") {
                let siblings: Vec<_> = files
                    .iter()
                    .map(|(n, _)| serde_json::json!({"rfilename": n}))
                    .collect();
                let body = serde_json::json!({"sha": COMMIT, "siblings": siblings}).to_string();
                (
                    "200 OK",
                    "Content-Type: application/json\r\n".to_string(),
                    body.into_bytes(),
                )
            } else if let Some(name) = path.strip_prefix("/owner/tiny-llama/resolve/main/") {
                match files.iter().find(|(n, _)| n == name) {
                    Some((_, data)) => {
                        let (start, end) = range.unwrap_or((0, None));
                        let end = end.unwrap_or(data.len() - 1).min(data.len() - 1);
                        let headers = format!(
                            "ETag: \"etag-{name}\"\r\nX-Repo-Commit: {COMMIT}\r\nContent-Range: bytes {start}-{end}/{}\r\n",
                            data.len()
                        );
                        ("206 Partial Content", headers, data[start..=end].to_vec())
                    }
                    None => ("404 Not Found", String::new(), Vec::new()),
                }
            } else {
                ("404 Not Found", String::new(), Vec::new())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        }
    });
    (address, log)
}

#[test]
fn repo_ids_and_paths_are_told_apart() {
    assert!(is_repo_id("mlx-community/Qwen3-0.6B-4bit"));
    assert!(is_repo_id("openai/gpt-oss-20b"));
    for not_id in [
        "model",
        "./a/b",
        "/abs/path",
        "a/b/c",
        "a//b",
        "../x",
        "~/models",
    ] {
        assert!(!is_repo_id(not_id), "{not_id}");
    }
    // An existing path is used as it is.
    let dir = fixture("llama");
    let spec = dir.to_str().unwrap();
    assert_eq!(resolve_model(spec, &HubOptions::default()).unwrap(), dir);
    // Neither a path nor an id.
    let error = resolve_model("no/such/model/here", &HubOptions::default()).unwrap_err();
    assert!(
        error.to_string().contains("no such file or folder"),
        "{error}"
    );
}

#[test]
fn offline_a_missing_model_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let options = HubOptions {
        offline: true,
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    let error = resolve_model("owner/not-downloaded", &options)
        .unwrap_err()
        .to_string();
    assert!(error.contains("not in the Hugging Face cache"), "{error}");
    assert!(error.contains("offline"), "{error}");
}

#[test]
fn an_unreachable_hub_is_a_clear_error_that_suggests_offline_mode() {
    let cache = tempfile::tempdir().unwrap();
    let options = HubOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        endpoint: Some("http://127.0.0.1:9".into()),
        ..Default::default()
    };
    let error = resolve_model("owner/tiny-llama", &options)
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot fetch owner/tiny-llama"), "{error}");
    assert!(error.contains("HF_HUB_OFFLINE=1"), "{error}");
}

#[test]
fn a_model_downloads_from_the_hub_loads_and_then_resolves_offline() {
    let source = fixture("llama");
    let mut files: Vec<(String, Vec<u8>)> = [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    .iter()
    .map(|n| (n.to_string(), std::fs::read(source.join(n)).unwrap()))
    .collect();
    // Copies in subfolders (as GPT-OSS's original/) are not fetched.
    files.push(("original/model.safetensors".into(), b"not needed".to_vec()));
    let (endpoint, log) = fake_hub(files);
    let cache = tempfile::tempdir().unwrap();
    let options = HubOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        endpoint: Some(endpoint),
        token: Some("hf_test_token".into()),
        ..Default::default()
    };
    let dir = resolve_model("owner/tiny-llama", &options).unwrap();
    assert!(
        dir.starts_with(cache.path().join("models--owner--tiny-llama/snapshots")),
        "{}",
        dir.display()
    );
    let log = log.lock().unwrap().clone();
    assert!(
        log.iter()
            .all(|l| l.ends_with("Authorization: Bearer hf_test_token")),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.contains("original/")), "{log:?}");
    // The files are the repository's, and the model loads from the cache.
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        std::fs::read(source.join("model.safetensors")).unwrap()
    );
    LoadedModel::load(&dir).unwrap();
    // Offline, the cache now answers without the hub.
    let offline = HubOptions {
        offline: true,
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    assert_eq!(resolve_model("owner/tiny-llama", &offline).unwrap(), dir);
    // Another revision was never downloaded.
    let other = HubOptions {
        revision: Some("v2".into()),
        ..offline
    };
    assert!(resolve_model("owner/tiny-llama", &other).is_err());
}

#[test]
fn prewarm_reads_every_weight_file() {
    let dir = fixture("llama");
    let done = loading::prewarm(&dir).unwrap();
    let expected: u64 = ["model.safetensors", "reference.safetensors"]
        .iter()
        .map(|f| dir.join(f).metadata().unwrap().len())
        .sum();
    assert_eq!(done.files, 2);
    assert_eq!(done.bytes, expected);
    let (generator, path) = loading::open(
        dir.to_str().unwrap(),
        &loading::LoadOptions::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(path, dir);
    assert!(!generator.loaded.eos_token_ids.is_empty());
}
