//! The `browser` tool: `search`, `open` and `find`, shown to the model as
//! numbered pages (`[cursor]`) with numbered lines (`L12:`) and numbered
//! links (`【3†text†domain】`) that it can open and cite.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use mlx_harmony_format::model::{ToolDescription, ToolNamespaceConfig};
use serde_json::{Value, json};
use url::Url;

/// Settings of the browser.
#[derive(Clone, Debug)]
pub struct BrowserConfig {
    /// A SearXNG-style search endpoint: `GET {url}?q=...&format=json`
    /// answering `{"results": [{"url", "title", "content"}]}`.
    pub search_url: Option<String>,
    /// Fetch pages on loopback and private networks (refused by default, so
    /// that the model cannot reach the user's router or local services).
    pub allow_local: bool,
    pub timeout: Duration,
    /// Largest page read, in bytes.
    pub max_page_bytes: usize,
    /// About how much of a page one view shows, in characters.
    pub view_chars: usize,
    /// Most search results shown.
    pub max_results: usize,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        BrowserConfig {
            search_url: None,
            allow_local: false,
            timeout: Duration::from_secs(20),
            max_page_bytes: 4 << 20,
            view_chars: 4000,
            max_results: 10,
        }
    }
}

/// The browser namespace as GPT-OSS was trained on it: openai-harmony's
/// `ToolNamespaceConfig.browser()`, byte for byte (checked against
/// openai-harmony in crates/harmony's golden tests). Everything it says holds
/// here: `source` accepts only the web.
const DESCRIPTION: &str = "Tool for browsing.
The `cursor` appears in brackets before each browsing display: `[{cursor}]`.
Cite information from the tool using the following format:
`【{cursor}†L{line_start}(-L{line_end})?】`, for example: `【6†L9-L11】` or `【8†L3】`.
Do not quote more than 10 words directly from the tool output.
sources=web (default: web)";

/// The namespace declared in the system message.
pub fn namespace() -> ToolNamespaceConfig {
    let number = |d: i64| json!({"type": "number", "default": d});
    ToolNamespaceConfig::new(
        "browser",
        Some(DESCRIPTION.to_string()),
        vec![
            ToolDescription::new(
                "search",
                "Searches for information related to `query` and displays `topn` results.",
                Some(json!({
                    "type": "object",
                    "properties": {
                        "query": {"type": "string"},
                        "topn": number(10),
                        "source": {"type": "string"},
                    },
                    "required": ["query"],
                })),
            ),
            ToolDescription::new(
                "open",
                "Opens the link `id` from the page indicated by `cursor` starting at line number \
                 `loc`, showing `num_lines` lines.\nValid link ids are displayed with the \
                 formatting: `【{id}†.*】`.\nIf `cursor` is not provided, the most recent page is \
                 implied.\nIf `id` is a string, it is treated as a fully qualified URL associated \
                 with `source`.\nIf `loc` is not provided, the viewport will be positioned at the \
                 beginning of the document or centered on the most relevant passage, if \
                 available.\nUse this function without `id` to scroll to a new location of an \
                 opened page.",
                Some(json!({
                    "type": "object",
                    "properties": {
                        "id": {"type": ["number", "string"], "default": -1},
                        "cursor": number(-1),
                        "loc": number(-1),
                        "num_lines": number(-1),
                        "view_source": {"type": "boolean", "default": false},
                        "source": {"type": "string"},
                    },
                })),
            ),
            ToolDescription::new(
                "find",
                "Finds exact matches of `pattern` in the current page, or the page given by \
                 `cursor`.",
                Some(json!({
                    "type": "object",
                    "properties": {
                        "pattern": {"type": "string"},
                        "cursor": number(-1),
                    },
                    "required": ["pattern"],
                })),
            ),
        ],
    )
}

/// Where a link of a page leads.
#[derive(Clone, Debug, PartialEq)]
struct Link {
    url: String,
    /// A line of the target to show first (links of find results).
    line: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
enum PageKind {
    Web,
    Search,
    Find,
}

#[derive(Clone, Debug)]
struct Page {
    url: String,
    title: String,
    lines: Vec<String>,
    links: Vec<Link>,
    kind: PageKind,
}

/// The browser's state for one conversation: the pages opened, in order
/// (their index is the cursor).
pub struct Browser {
    config: BrowserConfig,
    pages: Vec<Page>,
    web: ureq::Agent,
    search: ureq::Agent,
}

type Outcome = Result<String, String>;

impl Browser {
    pub fn new(config: BrowserConfig) -> Self {
        let agent = |guarded: bool| {
            let mut builder = ureq::AgentBuilder::new()
                .timeout(config.timeout)
                .redirects(5)
                .user_agent(concat!("mlx-harmony/", env!("CARGO_PKG_VERSION")));
            if guarded {
                builder = builder.resolver(GuardedResolver {
                    allow_local: config.allow_local,
                });
            }
            builder.build()
        };
        Browser {
            web: agent(true),
            // The search endpoint is the user's own choice (often a local SearXNG).
            search: agent(false),
            config,
            pages: Vec::new(),
        }
    }

    /// Runs `browser.<function>` with the model's JSON arguments; the text
    /// is the model's view (or the error it is told).
    pub fn call(&mut self, function: &str, arguments: &str) -> Outcome {
        let args: Value = if arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(arguments).map_err(|e| {
                format!(
                    "the arguments are not JSON ({e}); send an object, e.g. {{\"query\": \"...\"}}"
                )
            })?
        };
        if !args.is_object() {
            return Err("the arguments must be a JSON object".into());
        }
        let int = |key: &str, default: i64| -> Result<i64, String> {
            match args.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_i64()
                    .or_else(|| v.as_f64().map(|f| f as i64))
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .ok_or_else(|| format!("`{key}` must be a number, not {v}")),
            }
        };
        match function {
            "search" => {
                let query = args
                    .get("query")
                    .and_then(Value::as_str)
                    .filter(|q| !q.trim().is_empty())
                    .ok_or("`search` needs a `query` (text)")?;
                let topn = int("topn", self.config.max_results as i64)?
                    .clamp(1, self.config.max_results as i64) as usize;
                self.search(query, topn)
            }
            "open" => {
                let cursor = int("cursor", -1)?;
                let loc = int("loc", -1)?;
                let num_lines = int("num_lines", -1)?;
                let view_source = match args.get("view_source") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(v) => return Err(format!("`view_source` must be true or false, not {v}")),
                };
                match args.get("id") {
                    Some(Value::String(s)) if s.parse::<i64>().is_err() => {
                        self.open_url(s, loc, num_lines, view_source)
                    }
                    _ => {
                        let id = int("id", -1)?;
                        if view_source {
                            // The source of the link's page, or of the page itself.
                            let at = self.page_at(cursor)?;
                            let page = &self.pages[at];
                            let url = match id {
                                id if id < 0 && page.kind == PageKind::Web => page.url.clone(),
                                id if id < 0 => {
                                    return Err(
                                        "`view_source` needs a web page or a link `id`".into()
                                    );
                                }
                                id => page
                                    .links
                                    .get(id as usize)
                                    .map(|l| l.url.clone())
                                    .ok_or_else(|| {
                                        format!(
                                            "page [{at}] has no link {id} (it has {} links)",
                                            page.links.len()
                                        )
                                    })?,
                            };
                            return self.open_url(&url, loc, num_lines, true);
                        }
                        self.open_link(id, cursor, loc, num_lines)
                    }
                }
            }
            "find" => {
                let pattern = args
                    .get("pattern")
                    .and_then(Value::as_str)
                    .filter(|p| !p.trim().is_empty())
                    .ok_or("`find` needs a `pattern` (text)")?;
                let cursor = int("cursor", -1)?;
                self.find(pattern, cursor)
            }
            other => Err(format!(
                "the browser has no function `{other}`: use search, open or find"
            )),
        }
    }

    fn page_at(&self, cursor: i64) -> Result<usize, String> {
        if self.pages.is_empty() {
            return Err("no page is open yet: search or open a URL first".into());
        }
        let last = self.pages.len() - 1;
        if cursor < 0 {
            return Ok(last);
        }
        let cursor = cursor as usize;
        if cursor > last {
            return Err(format!(
                "cursor {cursor} does not exist: the pages are [0 - {last}]"
            ));
        }
        Ok(cursor)
    }

    fn search(&mut self, query: &str, topn: usize) -> Outcome {
        let Some(endpoint) = &self.config.search_url else {
            return Err(
                "search is not available: no search backend is configured. The user \
                        can start with --browser-search-url URL (a SearXNG JSON endpoint). You \
                        can still open URLs you know."
                    .into(),
            );
        };
        let mut url = Url::parse(endpoint)
            .map_err(|e| format!("the search backend URL {endpoint} is invalid: {e}"))?;
        url.query_pairs_mut()
            .append_pair("q", query)
            .append_pair("format", "json");
        let response = self
            .search
            .request_url("GET", &url)
            .call()
            .map_err(|e| format!("the search for `{query}` failed: {}", describe(e)))?;
        let body = read_limited(response, self.config.max_page_bytes)?;
        let parsed: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("the search backend did not answer JSON: {e}"))?;
        let results = parsed
            .get("results")
            .and_then(Value::as_array)
            .ok_or("the search backend's answer has no `results` list")?;
        let mut lines = Vec::new();
        let mut links = Vec::new();
        for result in results.iter().take(topn) {
            let Some(target) = result.get("url").and_then(Value::as_str) else {
                continue;
            };
            let title = result
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or(target);
            let domain = domain_of(target);
            lines.push(format!(
                "# 【{}†{}†{}】",
                links.len(),
                one_line(title),
                domain
            ));
            if let Some(snippet) = result.get("content").and_then(Value::as_str) {
                lines.extend(wrap(&one_line(snippet), 100));
            }
            lines.push(String::new());
            links.push(Link {
                url: target.to_string(),
                line: None,
            });
        }
        if links.is_empty() {
            lines.push(format!("No results for `{query}`."));
        }
        self.pages.push(Page {
            url: url.to_string(),
            title: format!("Search results for `{query}`"),
            lines,
            links,
            kind: PageKind::Search,
        });
        self.show(self.pages.len() - 1, 0, -1)
    }

    fn open_link(&mut self, id: i64, cursor: i64, loc: i64, num_lines: i64) -> Outcome {
        let at = self.page_at(cursor)?;
        if id < 0 {
            // The same page again, at another place.
            let page = self.pages[at].clone();
            self.pages.push(page);
            return self.show(self.pages.len() - 1, loc.max(0) as usize, num_lines);
        }
        let page = &self.pages[at];
        let link = page.links.get(id as usize).cloned().ok_or_else(|| {
            format!(
                "page [{at}] has no link {id} (it has {} links)",
                page.links.len()
            )
        })?;
        let loc = match (loc, link.line) {
            (l, _) if l >= 0 => l as usize,
            (_, Some(line)) => line.saturating_sub(4),
            _ => 0,
        };
        let existing = self
            .pages
            .iter()
            .rev()
            .find(|p| p.url == link.url && p.kind == PageKind::Web)
            .cloned();
        let page = match existing {
            Some(page) => page,
            None => self.fetch(&link.url)?,
        };
        self.pages.push(page);
        self.show(self.pages.len() - 1, loc, num_lines)
    }

    fn open_url(&mut self, url: &str, loc: i64, num_lines: i64, source: bool) -> Outcome {
        let page = self.fetch_as(url, source)?;
        self.pages.push(page);
        self.show(self.pages.len() - 1, loc.max(0) as usize, num_lines)
    }

    fn find(&mut self, pattern: &str, cursor: i64) -> Outcome {
        let at = self.page_at(cursor)?;
        let page = &self.pages[at];
        if page.kind != PageKind::Web {
            return Err("`find` works on web pages, not on search or find results".into());
        }
        let needle = pattern.to_lowercase();
        let mut lines = Vec::new();
        let mut links = Vec::new();
        let mut i = 0;
        while i < page.lines.len() && links.len() < 50 {
            if !page.lines[i].to_lowercase().contains(&needle) {
                i += 1;
                continue;
            }
            lines.push(format!("# 【{}†match at L{i}】", links.len()));
            lines.extend(page.lines[i..(i + 4).min(page.lines.len())].iter().cloned());
            lines.push(String::new());
            links.push(Link {
                url: page.url.clone(),
                line: Some(i),
            });
            i += 4;
        }
        if links.is_empty() {
            lines.push(format!("No `find` results for pattern: `{pattern}`"));
        }
        let title = format!("Find results for `{pattern}` in `{}`", page.title);
        let url = page.url.clone();
        self.pages.push(Page {
            url,
            title,
            lines,
            links,
            kind: PageKind::Find,
        });
        self.show(self.pages.len() - 1, 0, -1)
    }

    /// The view of page `cursor` from line `loc`: `num_lines` lines, or as
    /// many as fit the view size.
    fn show(&mut self, cursor: usize, loc: usize, num_lines: i64) -> Outcome {
        let page = &self.pages[cursor];
        let total = page.lines.len();
        if total > 0 && loc >= total {
            self.pages.pop();
            return Err(format!(
                "line {loc} is past the end of the page (its last line is {})",
                total - 1
            ));
        }
        let end = if num_lines > 0 {
            (loc + num_lines as usize).min(total)
        } else {
            let mut chars = 0;
            let mut end = loc;
            while end < total
                && (end == loc || chars + page.lines[end].len() < self.config.view_chars)
            {
                chars += page.lines[end].len() + 8;
                end += 1;
            }
            end
        };
        let mut out = format!("[{cursor}] {}", page.title);
        if page.kind == PageKind::Web {
            out.push_str(&format!(" ({})", page.url));
        }
        out.push_str(&format!(
            "\n**viewing lines [{loc} - {}] of {}**\n\n",
            end.saturating_sub(1),
            total.saturating_sub(1)
        ));
        let body: Vec<String> = (loc..end)
            .map(|i| format!("L{i}: {}", page.lines[i]))
            .collect();
        out.push_str(&body.join("\n"));
        Ok(out)
    }

    fn fetch(&self, address: &str) -> Result<Page, String> {
        self.fetch_as(address, false)
    }

    /// The page at `address`, rendered, or with `source` its text as sent
    /// (HTML markup included), for `open` with `view_source`.
    fn fetch_as(&self, address: &str, source: bool) -> Result<Page, String> {
        let url = Url::parse(address.trim())
            .map_err(|e| format!("`{address}` is not a URL ({e}); give a full http(s) URL"))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!(
                "only http and https URLs can be opened, not {}:",
                url.scheme()
            ));
        }
        let response = self
            .web
            .request_url("GET", &url)
            .call()
            .map_err(|e| format!("opening {url} failed: {}", describe(e)))?;
        let final_url = response.get_url().to_string();
        let content_type = response.content_type().to_ascii_lowercase();
        let body = read_limited(response, self.config.max_page_bytes)?;
        let base = Url::parse(&final_url).unwrap_or(url);
        let html =
            content_type.contains("html") || content_type.is_empty() && looks_like_html(&body);
        if html && !source {
            Ok(html_page(&base, &body))
        } else if html
            || content_type.starts_with("text/")
            || content_type.contains("json")
            || content_type.contains("xml")
        {
            let text = String::from_utf8_lossy(&body);
            let name = base.path().rsplit('/').next().unwrap_or("").to_string();
            Ok(Page {
                url: base.to_string(),
                title: if source {
                    format!("Source of {base}")
                } else {
                    name
                },
                lines: text.lines().flat_map(|l| wrap(l, 100)).collect(),
                links: Vec::new(),
                kind: PageKind::Web,
            })
        } else {
            Err(format!(
                "{base} is {content_type}, which the browser cannot show as text"
            ))
        }
    }
}

fn describe(error: ureq::Error) -> String {
    match error {
        ureq::Error::Status(code, response) => {
            format!("the server answered {code} {}", response.status_text())
        }
        ureq::Error::Transport(t) => {
            // Our resolver's refusals arrive as transport errors; say them plainly.
            let text = t.to_string();
            match text.find("refused:") {
                Some(at) => text[at..].to_string(),
                None => text,
            }
        }
    }
}

fn read_limited(response: ureq::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    response
        .into_reader()
        .take(limit as u64)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading the page failed: {e}"))?;
    Ok(body)
}

fn looks_like_html(body: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&body[..body.len().min(512)]).to_ascii_lowercase();
    head.contains("<html") || head.contains("<!doctype html")
}

fn domain_of(url: &str) -> String {
    Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn html_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let start = lower.find("<title")?;
    let open_end = lower[start..].find('>')? + start + 1;
    let end = lower[open_end..].find("</title")? + open_end;
    let title = one_line(&decode_entities(&html[open_end..end]));
    (!title.is_empty()).then_some(title)
}

fn decode_entities(text: &str) -> String {
    text.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
}

/// An HTML page as numbered-link text.
fn html_page(url: &Url, body: &[u8]) -> Page {
    use html2text::render::RichAnnotation;
    let html = String::from_utf8_lossy(body);
    let title = html_title(&html).unwrap_or_else(|| url.to_string());
    let rendered = html2text::config::rich()
        .lines_from_read(html.as_bytes(), 10_000)
        .unwrap_or_default();
    let host = url.host_str().unwrap_or("").to_string();
    let mut links: Vec<Link> = Vec::new();
    let mut lines = Vec::new();
    for line in rendered {
        let mut text = String::new();
        // Consecutive pieces of one link become one 【id†text】.
        let mut open: Option<(String, String)> = None;
        let close = |open: &mut Option<(String, String)>,
                     text: &mut String,
                     links: &mut Vec<Link>| {
            if let Some((target, label)) = open.take() {
                let label = one_line(&label);
                match url.join(&target) {
                    Ok(resolved)
                        if matches!(resolved.scheme(), "http" | "https") && !label.is_empty() =>
                    {
                        let domain = resolved.host_str().unwrap_or("").to_string();
                        let id = links.len();
                        if domain == host {
                            text.push_str(&format!("【{id}†{label}】"));
                        } else {
                            text.push_str(&format!("【{id}†{label}†{domain}】"));
                        }
                        links.push(Link {
                            url: resolved.to_string(),
                            line: None,
                        });
                    }
                    _ => text.push_str(&label),
                }
            }
        };
        for piece in line.tagged_strings() {
            let target = piece.tag.iter().find_map(|a| match a {
                RichAnnotation::Link(target) => Some(target.clone()),
                _ => None,
            });
            match target {
                Some(target) => match &mut open {
                    Some((current, label)) if *current == target => label.push_str(&piece.s),
                    _ => {
                        close(&mut open, &mut text, &mut links);
                        open = Some((target, piece.s.clone()));
                    }
                },
                None => {
                    close(&mut open, &mut text, &mut links);
                    text.push_str(&piece.s);
                }
            }
        }
        close(&mut open, &mut text, &mut links);
        lines.extend(wrap(text.trim_end(), 100));
    }
    // Runs of blank lines carry nothing for the model.
    lines.dedup_by(|a, b| a.is_empty() && b.is_empty());
    Page {
        url: url.to_string(),
        title,
        lines,
        links,
        kind: PageKind::Web,
    }
}

/// Splits a line at spaces into pieces of at most `width` characters, never
/// inside a `【…】` link.
fn wrap(line: &str, width: usize) -> Vec<String> {
    if line.chars().count() <= width {
        return vec![line.to_string()];
    }
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0i32;
    let mut word = String::new();
    let flush_word = |word: &mut String, current: &mut String, out: &mut Vec<String>| {
        if !current.is_empty() && current.chars().count() + word.chars().count() > width {
            out.push(current.trim_end().to_string());
            current.clear();
        }
        current.push_str(word);
        word.clear();
    };
    for c in line.chars() {
        match c {
            '【' => depth += 1,
            '】' => depth -= 1,
            _ => {}
        }
        word.push(c);
        if c == ' ' && depth <= 0 {
            flush_word(&mut word, &mut current, &mut out);
        }
    }
    flush_word(&mut word, &mut current, &mut out);
    if !current.is_empty() {
        out.push(current.trim_end().to_string());
    }
    out
}

/// Resolves host names and refuses loopback, private, link-local and other
/// non-public addresses unless allowed; every connection (redirects too)
/// goes through it, so a public name cannot lead to a private address.
struct GuardedResolver {
    allow_local: bool,
}

impl ureq::Resolver for GuardedResolver {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        let addresses: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
        if self.allow_local {
            return Ok(addresses);
        }
        let public: Vec<SocketAddr> = addresses
            .iter()
            .copied()
            .filter(|a| is_public(a.ip()))
            .collect();
        if public.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "refused: {netloc} is a loopback or private-network address; the user can \
                     allow those with --browser-allow-local"
                ),
            ));
        }
        Ok(public)
    }
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() || v6.is_unspecified() {
                return false;
            }
            // An IPv4 address inside an IPv6 one reaches that IPv4 host
            // (through the kernel, a NAT64 gateway or a 6to4/Teredo relay):
            // it must be public too.
            if let Some(v4) = embedded_ipv4(v6)
                && !is_public(IpAddr::V4(v4))
            {
                return false;
            }
            let s = v6.segments();
            !(v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard
                || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001)) // local-use NAT64
        }
    }
}

/// The IPv4 address an IPv6 one carries: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`), 6to4
/// (`2002:AABB:CCDD::/48`) and Teredo (`2001::/32`, the client's address
/// inverted in the last 32 bits).
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let from = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        std::net::Ipv4Addr::new(a, b, c, d)
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] {
        return Some(from(s[6], s[7]));
    }
    if s[..6] == [0x0064, 0xff9b, 0, 0, 0, 0] {
        return Some(from(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(from(s[1], s[2]));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some(from(!s[6], !s[7]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_loopback_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            // IPv4 inside IPv6: compatible, NAT64, 6to4, Teredo.
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:c0a8:101::",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "64:ff9b:1::1",
            "fec0::1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "64:ff9b::1.1.1.1",
            "2002:101:101::1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn wrapping_never_splits_a_link() {
        let line = format!(
            "{} 【12†a link with several words†example.com】 tail",
            "word ".repeat(18)
        );
        let wrapped = wrap(&line, 100);
        assert!(wrapped.len() > 1);
        assert!(
            wrapped
                .iter()
                .any(|l| l.contains("【12†a link with several words†example.com】"))
        );
        assert!(
            wrapped
                .iter()
                .all(|l| l.matches('【').count() == l.matches('】').count())
        );
    }
}
