//! The browser against a local web server (pages, a redirect, a binary file,
//! a SearXNG-style search endpoint): the page/cursor/line presentation,
//! links by id, find, and the refusals (private addresses, other schemes,
//! no search backend).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use mlx_harmony_tools::{Browser, BrowserConfig, ToolBox, ToolsConfig};

const PAGE: &str = r#"<!doctype html><html><head><title>Harmony &amp; Tools</title></head>
<body><h1>Harmony format</h1>
<p>The Harmony format gives each message a <b>channel</b>. See <a href="/second.html">the second page</a>
or <a href="https://example.org/spec">the spec</a>.</p>
<p>Line about channels: analysis, commentary and final.</p>
<p>Another paragraph mentions Channels again.</p>
<script>var hidden = "no";</script>
</body></html>"#;

const SECOND: &str = "<html><head><title>Second</title></head><body><p>The second page says hello.</p></body></html>";

/// Serves the test site on a loopback port; returns its base URL.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let base_for_server = base.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let base = base_for_server.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap() <= 2 {
                        break;
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, kind, body): (&str, &str, Vec<u8>) = match path.as_str() {
                    "/page.html" => ("200 OK", "text/html; charset=utf-8", PAGE.into()),
                    "/second.html" => ("200 OK", "text/html", SECOND.into()),
                    "/notes.txt" => (
                        "200 OK",
                        "text/plain",
                        "plain line 1\nplain line 2\n".into(),
                    ),
                    "/binary" => ("200 OK", "application/octet-stream", vec![0, 159, 146, 150]),
                    "/redirect" => {
                        let reply = format!(
                            "HTTP/1.1 302 Found\r\nLocation: {base}/second.html\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        stream.write_all(reply.as_bytes()).unwrap();
                        return;
                    }
                    p if p.starts_with("/search?") => {
                        assert!(p.contains("format=json"), "{p}");
                        let results = serde_json::json!({"results": [
                            {"url": format!("{base}/page.html"), "title": "Harmony & Tools", "content": "All about the Harmony format."},
                            {"url": format!("{base}/second.html"), "title": "Second", "content": "Says hello."},
                        ]});
                        (
                            "200 OK",
                            "application/json",
                            results.to_string().into_bytes(),
                        )
                    }
                    _ => ("404 Not Found", "text/plain", b"not here".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            });
        }
    });
    base
}

fn browser(base: &str, allow_local: bool) -> Browser {
    Browser::new(BrowserConfig {
        search_url: Some(format!("{base}/search")),
        allow_local,
        timeout: Duration::from_secs(5),
        ..BrowserConfig::default()
    })
}

#[test]
fn search_then_open_a_result_then_find() {
    let base = serve();
    let mut browser = browser(&base, true);
    let results = browser
        .call("search", r#"{"query": "harmony format"}"#)
        .unwrap();
    assert!(
        results.starts_with("[0] Search results for `harmony format`\n**viewing lines [0 - "),
        "{results}"
    );
    assert!(
        results.contains("L0: # 【0†Harmony & Tools†127.0.0.1】"),
        "{results}"
    );
    assert!(
        results.contains("All about the Harmony format."),
        "{results}"
    );

    let page = browser.call("open", r#"{"id": 0}"#).unwrap();
    assert!(
        page.starts_with(&format!(
            "[1] Harmony & Tools ({base}/page.html)\n**viewing lines [0 - "
        )),
        "{page}"
    );
    assert!(page.contains("L0: # Harmony format"), "{page}");
    assert!(
        page.contains("【0†the second page】"),
        "same-site link: {page}"
    );
    assert!(
        page.contains("【1†the spec†example.org】"),
        "other-site link: {page}"
    );
    assert!(!page.contains("hidden"), "scripts are not text: {page}");

    // A link of the page, by id.
    let second = browser.call("open", r#"{"id": 0}"#).unwrap();
    assert!(second.starts_with("[2] Second ("), "{second}");
    assert!(second.contains("The second page says hello."), "{second}");

    // Find in an earlier page, by cursor; case does not matter.
    let found = browser
        .call("find", r#"{"pattern": "CHANNELS", "cursor": 1}"#)
        .unwrap();
    assert!(
        found.starts_with("[3] Find results for `CHANNELS` in `Harmony & Tools`"),
        "{found}"
    );
    assert!(found.contains("# 【0†match at L"), "{found}");
    assert!(found.contains("Line about channels"), "{found}");

    // Scrolling: the same page from a line, with a line count.
    let window = browser
        .call("open", r#"{"cursor": 1, "loc": 2, "num_lines": 1}"#)
        .unwrap();
    assert!(window.contains("**viewing lines [2 - 2] of "), "{window}");
    assert!(window.contains("\nL2: "), "{window}");
    assert!(!window.contains("\nL3: "), "{window}");
}

#[test]
fn urls_redirects_plain_text_and_what_cannot_be_shown() {
    let base = serve();
    let mut browser = browser(&base, true);
    let redirected = browser
        .call("open", &format!(r#"{{"id": "{base}/redirect"}}"#))
        .unwrap();
    assert!(
        redirected.contains(&format!("({base}/second.html)")),
        "{redirected}"
    );
    let text = browser
        .call("open", &format!(r#"{{"id": "{base}/notes.txt"}}"#))
        .unwrap();
    assert!(text.contains("L1: plain line 2"), "{text}");
    // view_source: the page as sent, markup included; of a URL, and of the
    // page opened last.
    let source = browser
        .call(
            "open",
            &format!(r#"{{"id": "{base}/second.html", "view_source": true}}"#),
        )
        .unwrap();
    assert!(source.contains("<title>Second</title>"), "{source}");
    assert!(source.contains("Source of"), "{source}");
    browser
        .call("open", &format!(r#"{{"id": "{base}/second.html"}}"#))
        .unwrap();
    let again = browser.call("open", r#"{"view_source": true}"#).unwrap();
    assert!(
        again.contains("<p>The second page says hello.</p>"),
        "{again}"
    );
    assert!(
        browser
            .call("open", r#"{"view_source": "yes"}"#)
            .unwrap_err()
            .contains("view_source")
    );
    let binary = browser
        .call("open", &format!(r#"{{"id": "{base}/binary"}}"#))
        .unwrap_err();
    assert!(binary.contains("cannot show"), "{binary}");
    let missing = browser
        .call("open", &format!(r#"{{"id": "{base}/missing"}}"#))
        .unwrap_err();
    assert!(missing.contains("404"), "{missing}");
    let scheme = browser
        .call("open", r#"{"id": "file:///etc/passwd"}"#)
        .unwrap_err();
    assert!(scheme.contains("only http and https"), "{scheme}");
    let past_end = browser.call("open", r#"{"loc": 500}"#).unwrap_err();
    assert!(past_end.contains("past the end"), "{past_end}");
    let bad_cursor = browser
        .call("open", r#"{"id": 3, "cursor": 42}"#)
        .unwrap_err();
    assert!(
        bad_cursor.contains("cursor 42 does not exist"),
        "{bad_cursor}"
    );
    let bad_args = browser.call("open", "not json").unwrap_err();
    assert!(bad_args.contains("not JSON"), "{bad_args}");
}

#[test]
fn private_addresses_are_refused_unless_allowed() {
    let base = serve();
    let mut guarded = browser(&base, false);
    for address in [
        format!("{base}/page.html"),
        "http://localhost:9/".to_string(),
    ] {
        let refused = guarded
            .call("open", &serde_json::json!({"id": address}).to_string())
            .unwrap_err();
        assert!(refused.contains("--browser-allow-local"), "{refused}");
    }
    // A redirect to loopback from an allowed search result is refused too:
    // every connection goes through the same check.
    let results = guarded.call("search", r#"{"query": "x"}"#).unwrap();
    assert!(results.contains("【0†"), "{results}");
    let refused = guarded.call("open", r#"{"id": 0}"#).unwrap_err();
    assert!(refused.contains("refused"), "{refused}");
}

#[test]
fn without_a_search_backend_the_model_is_told_so() {
    let mut tools = ToolBox::new(ToolsConfig {
        browser: Some(BrowserConfig::default()),
        ..ToolsConfig::default()
    })
    .unwrap();
    assert!(tools.handles("browser.search"));
    assert!(!tools.handles("python"));
    let output = tools.execute("browser.search", r#"{"query": "weather"}"#);
    assert_eq!(output.author, "browser.search");
    assert!(
        output.content.starts_with("Error: search is not available"),
        "{}",
        output.content
    );
    assert!(
        output.content.contains("--browser-search-url"),
        "{}",
        output.content
    );
    let namespaces = tools.builtin_namespaces();
    assert_eq!(namespaces.len(), 1);
    let names: Vec<&str> = namespaces[0]
        .tools
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["search", "open", "find"]);
}
