//! The `apply_patch` tool: the file-oriented patch format GPT-OSS and Codex
//! models write (`*** Begin Patch` … `*** End Patch`), applied under one root
//! folder, all or nothing.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The function's description for the model (developer message).
pub const DESCRIPTION: &str = "Edits files: creates, changes, renames and deletes them with one \
patch. Send the patch as plain text (or as {\"patch\": \"...\"}), in this format:
*** Begin Patch
*** Add File: path/new.txt
+every line of the new file, each starting with +
*** Update File: path/old.py
*** Move to: path/renamed.py   (optional)
@@ text of a line just before the change, to find the place (optional)
 a context line, starting with a space
-a line to remove
+a line to add
*** Delete File: path/obsolete.txt
*** End Patch
Paths are relative to the project folder. Give about three lines of context around each change; \
the patch is applied completely or not at all.";

/// One line of a hunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HunkLine {
    Context(String),
    Remove(String),
    Add(String),
}

/// A change inside a file: lines to find (context and removed) and what
/// replaces them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hunk {
    /// The text after `@@`: a line to look for before the hunk's context.
    pub header: Option<String>,
    pub lines: Vec<HunkLine>,
    /// `*** End of File`: the hunk's context ends the file.
    pub end_of_file: bool,
}

/// One file operation of a patch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOp {
    Add {
        path: String,
        contents: String,
    },
    Delete {
        path: String,
    },
    Update {
        path: String,
        move_to: Option<String>,
        hunks: Vec<Hunk>,
    },
}

/// Why a patch was not applied (nothing was changed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("the patch is malformed at line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("{path}: {message}")]
    Path { path: String, message: String },
    #[error("{path}: hunk {hunk}{header}: {message}")]
    Hunk {
        path: String,
        hunk: usize,
        header: String,
        message: String,
    },
    #[error("writing the patch failed ({0}); every file was put back as it was")]
    Io(String),
}

/// Reads a patch.
pub fn parse_patch(text: &str) -> Result<Vec<FileOp>, PatchError> {
    let lines: Vec<&str> = text
        .trim()
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .collect();
    let syntax = |line: usize, message: &str| PatchError::Syntax {
        line: line + 1,
        message: message.to_string(),
    };
    if lines.first().map(|l| l.trim()) != Some("*** Begin Patch") {
        return Err(syntax(0, "a patch starts with `*** Begin Patch`"));
    }
    if lines.len() < 2 || lines.last().map(|l| l.trim()) != Some("*** End Patch") {
        return Err(syntax(
            lines.len().saturating_sub(1),
            "a patch ends with `*** End Patch`",
        ));
    }
    let body = &lines[1..lines.len() - 1];
    let mut ops = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let line = body[i];
        let at = i + 1; // index into `lines`
        if let Some(path) = line.strip_prefix("*** Add File: ") {
            let mut contents = String::new();
            i += 1;
            while i < body.len() && !body[i].starts_with("*** ") {
                let Some(added) = body[i].strip_prefix('+') else {
                    return Err(syntax(i + 1, "every line of an added file starts with `+`"));
                };
                contents.push_str(added);
                contents.push('\n');
                i += 1;
            }
            ops.push(FileOp::Add {
                path: path.trim().to_string(),
                contents,
            });
        } else if let Some(path) = line.strip_prefix("*** Delete File: ") {
            ops.push(FileOp::Delete {
                path: path.trim().to_string(),
            });
            i += 1;
        } else if let Some(path) = line.strip_prefix("*** Update File: ") {
            i += 1;
            let mut move_to = None;
            if let Some(to) = body.get(i).and_then(|l| l.strip_prefix("*** Move to: ")) {
                move_to = Some(to.trim().to_string());
                i += 1;
            }
            let mut hunks: Vec<Hunk> = Vec::new();
            while i < body.len() {
                let line = body[i];
                if line == "*** End of File" {
                    match hunks.last_mut() {
                        Some(h) => h.end_of_file = true,
                        None => return Err(syntax(i + 1, "`*** End of File` outside a hunk")),
                    }
                    i += 1;
                    continue;
                }
                if line.starts_with("*** ") {
                    break;
                }
                if let Some(header) = line.strip_prefix("@@") {
                    let header = header.trim();
                    hunks.push(Hunk {
                        header: (!header.is_empty()).then(|| header.to_string()),
                        lines: Vec::new(),
                        end_of_file: false,
                    });
                    i += 1;
                    continue;
                }
                if hunks.is_empty() {
                    // The first hunk may come without its `@@` line.
                    hunks.push(Hunk {
                        header: None,
                        lines: Vec::new(),
                        end_of_file: false,
                    });
                }
                let hunk = hunks.last_mut().expect("pushed above");
                let parsed = match line.chars().next() {
                    Some(' ') => HunkLine::Context(line[1..].to_string()),
                    Some('-') => HunkLine::Remove(line[1..].to_string()),
                    Some('+') => HunkLine::Add(line[1..].to_string()),
                    // An empty context line often loses its space.
                    None => HunkLine::Context(String::new()),
                    Some(_) => {
                        return Err(syntax(
                            i + 1,
                            "a hunk line starts with ` ` (context), `-` (remove) or `+` (add)",
                        ));
                    }
                };
                hunk.lines.push(parsed);
                i += 1;
            }
            if hunks.iter().all(|h| h.lines.is_empty()) && move_to.is_none() {
                return Err(syntax(at, "an `*** Update File:` needs at least one hunk"));
            }
            ops.push(FileOp::Update {
                path: path.trim().to_string(),
                move_to,
                hunks,
            });
        } else if line.trim().is_empty() {
            i += 1;
        } else {
            return Err(syntax(
                at,
                "expected `*** Add File:`, `*** Update File:` or `*** Delete File:`",
            ));
        }
    }
    if ops.is_empty() {
        return Err(syntax(0, "the patch changes no file"));
    }
    Ok(ops)
}

/// What applying a patch did (or would do, in a dry run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchSummary {
    /// `A path`, `M path`, `M new (moved from old)`, `D path`, in patch order.
    pub changes: Vec<String>,
    pub dry_run: bool,
}

impl std::fmt::Display for PatchSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dry_run {
            writeln!(
                f,
                "Dry run: the patch applies cleanly; nothing was written. It would change:"
            )?;
        } else {
            writeln!(f, "Patch applied. Changed:")?;
        }
        write!(f, "{}", self.changes.join("\n"))
    }
}

/// Applies `patch` under `root`: every file operation or none.
pub fn apply_patch(root: &Path, patch: &str, dry_run: bool) -> Result<PatchSummary, PatchError> {
    let ops = parse_patch(patch)?;
    let root = root.canonicalize().map_err(|e| PatchError::Path {
        path: root.display().to_string(),
        message: format!("the patch root cannot be opened: {e}"),
    })?;
    // The files as the patch leaves them: path -> new contents (None: deleted).
    let mut planned: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
    let mut changes = Vec::new();
    let current = |planned: &BTreeMap<PathBuf, Option<String>>, path: &Path| -> Option<String> {
        match planned.get(path) {
            Some(state) => state.clone(),
            None => std::fs::read_to_string(path).ok(),
        }
    };
    for op in &ops {
        match op {
            FileOp::Add { path, contents } => {
                let full = resolve(&root, path)?;
                if current(&planned, &full).is_some() || full.is_dir() {
                    return Err(path_error(
                        path,
                        "already exists; use `*** Update File:` to change it",
                    ));
                }
                planned.insert(full, Some(contents.clone()));
                changes.push(format!("A {path}"));
            }
            FileOp::Delete { path } => {
                let full = resolve(&root, path)?;
                if current(&planned, &full).is_none() {
                    return Err(path_error(path, "cannot be deleted: there is no such file"));
                }
                planned.insert(full, None);
                changes.push(format!("D {path}"));
            }
            FileOp::Update {
                path,
                move_to,
                hunks,
            } => {
                let full = resolve(&root, path)?;
                let Some(old) = current(&planned, &full) else {
                    return Err(path_error(
                        path,
                        "cannot be updated: there is no such file (use `*** Add File:` to create it)",
                    ));
                };
                let new = apply_hunks(path, &old, hunks)?;
                match move_to {
                    Some(to) if to != path => {
                        let dest = resolve(&root, to)?;
                        if current(&planned, &dest).is_some() {
                            return Err(path_error(
                                to,
                                "cannot be the target of `*** Move to:`: it already exists",
                            ));
                        }
                        planned.insert(full, None);
                        planned.insert(dest, Some(new));
                        changes.push(format!("M {to} (moved from {path})"));
                    }
                    _ => {
                        planned.insert(full, Some(new));
                        changes.push(format!("M {path}"));
                    }
                }
            }
        }
    }
    if !dry_run {
        commit(&planned)?;
    }
    Ok(PatchSummary { changes, dry_run })
}

fn path_error(path: &str, message: &str) -> PatchError {
    PatchError::Path {
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// The full path of a patch path, refused when it could leave the root: it
/// must be relative, without `..`, and no existing part of it may be a
/// symbolic link that points out of the root.
fn resolve(root: &Path, path: &str) -> Result<PathBuf, PatchError> {
    let relative = Path::new(path);
    if path.is_empty() {
        return Err(path_error(path, "the path is empty"));
    }
    for component in relative.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(path_error(path, "refused: `..` would leave the patch root"));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(path_error(
                    path,
                    "refused: absolute paths are not allowed; give it relative to the patch root",
                ));
            }
        }
    }
    let full = root.join(relative);
    // Walk the existing part of the path: every step must stay in the root.
    let mut probe = full.clone();
    loop {
        if std::fs::symlink_metadata(&probe).is_ok() {
            let real = probe
                .canonicalize()
                .map_err(|e| path_error(path, &format!("cannot be resolved: {e}")))?;
            if !real.starts_with(root) {
                return Err(path_error(
                    path,
                    "refused: a symbolic link on this path points out of the patch root",
                ));
            }
            break;
        }
        if !probe.pop() || probe == root {
            break;
        }
    }
    Ok(full)
}

/// The file's lines and whether it ended with a newline.
fn split_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    lines
}

fn apply_hunks(path: &str, old: &str, hunks: &[Hunk]) -> Result<String, PatchError> {
    let lines = split_lines(old);
    let mut cursor = 0;
    // (start, lines replaced, new lines)
    let mut edits: Vec<(usize, usize, Vec<String>)> = Vec::new();
    for (n, hunk) in hunks.iter().enumerate() {
        let error = |message: String| PatchError::Hunk {
            path: path.to_string(),
            hunk: n + 1,
            header: hunk
                .header
                .as_ref()
                .map(|h| format!(" (@@ {h})"))
                .unwrap_or_default(),
            message,
        };
        if let Some(header) = &hunk.header {
            let found = find_sequence(&lines, &[header.as_str()], cursor, false);
            match found {
                Some(at) => cursor = at + 1,
                None => {
                    return Err(error(format!(
                        "the line `{header}` after `@@` was not found"
                    )));
                }
            }
        }
        let before: Vec<&str> = hunk
            .lines
            .iter()
            .filter_map(|l| match l {
                HunkLine::Context(s) | HunkLine::Remove(s) => Some(s.as_str()),
                HunkLine::Add(_) => None,
            })
            .collect();
        let after: Vec<String> = hunk
            .lines
            .iter()
            .filter_map(|l| match l {
                HunkLine::Context(s) | HunkLine::Add(s) => Some(s.clone()),
                HunkLine::Remove(_) => None,
            })
            .collect();
        if before.is_empty() {
            // Only additions: after the header line, else at the end.
            let at = if hunk.header.is_some() && !hunk.end_of_file {
                cursor
            } else {
                lines.len()
            };
            edits.push((at, 0, after));
            continue;
        }
        let Some(at) = find_sequence(&lines, &before, cursor, hunk.end_of_file) else {
            let shown: Vec<String> = before.iter().map(|l| format!("  {l}")).collect();
            return Err(error(format!(
                "these lines were not found in the file{}:\n{}",
                if cursor > 0 {
                    format!(" after line {cursor}")
                } else {
                    String::new()
                },
                shown.join("\n")
            )));
        };
        // Context lines keep the file's text (the hunk's may differ in whitespace).
        let mut original = lines[at..at + before.len()].iter();
        let after = hunk
            .lines
            .iter()
            .filter_map(|l| match l {
                HunkLine::Context(_) => original.next().map(|s| s.to_string()),
                HunkLine::Remove(_) => {
                    original.next();
                    None
                }
                HunkLine::Add(s) => Some(s.clone()),
            })
            .collect();
        edits.push((at, before.len(), after));
        cursor = at + before.len();
    }
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut next = 0;
    for (at, len, new) in edits {
        out.extend(lines[next..at].iter().map(|s| s.to_string()));
        out.extend(new);
        next = at + len;
    }
    out.extend(lines[next..].iter().map(|s| s.to_string()));
    let mut text = out.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    Ok(text)
}

/// Where `needle` occurs in `lines` at or after `from`: exactly, else
/// ignoring trailing whitespace, else ignoring surrounding whitespace (models
/// often get indentation of blank lines wrong). `at_end`: it must end the file.
fn find_sequence(lines: &[&str], needle: &[&str], from: usize, at_end: bool) -> Option<usize> {
    let compare: [fn(&str, &str) -> bool; 3] = [
        |a, b| a == b,
        |a, b| a.trim_end() == b.trim_end(),
        |a, b| a.trim() == b.trim(),
    ];
    if needle.len() > lines.len() {
        return None;
    }
    for same in compare {
        let matches = |start: usize| {
            lines[start..start + needle.len()]
                .iter()
                .zip(needle)
                .all(|(a, b)| same(a, b))
        };
        if at_end {
            let start = lines.len() - needle.len();
            if start >= from && matches(start) {
                return Some(start);
            }
            continue;
        }
        if let Some(start) = (from..=lines.len() - needle.len()).find(|&s| matches(s)) {
            return Some(start);
        }
    }
    None
}

/// Writes the planned files; on any failure puts back what was written.
fn commit(planned: &BTreeMap<PathBuf, Option<String>>) -> Result<(), PatchError> {
    let mut undo: Vec<(PathBuf, Option<Vec<u8>>)> = Vec::new();
    let mut result = Ok(());
    for (path, state) in planned {
        let original = std::fs::read(path).ok();
        let step = match state {
            Some(contents) => path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|_| write_new_file(path, contents.as_bytes())),
            None => std::fs::remove_file(path),
        };
        match step {
            Ok(()) => undo.push((path.clone(), original)),
            Err(e) => {
                result = Err(PatchError::Io(format!("{}: {e}", path.display())));
                break;
            }
        }
    }
    if result.is_err() {
        for (path, original) in undo.into_iter().rev() {
            let _ = match original {
                Some(bytes) => write_new_file(&path, &bytes),
                None => std::fs::remove_file(&path),
            };
        }
    }
    result
}

/// Writes `contents` to a new file beside `path` and renames it over
/// `path`: a file of the root that is a hard link to one outside it (or a
/// symbolic link) is replaced, never written through, and a reader never sees
/// a half-written file. An existing file's permissions are kept.
fn write_new_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".apply_patch.")
        .tempfile_in(dir)?;
    file.write_all(contents)?;
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.is_file()
    {
        file.as_file().set_permissions(meta.permissions())?;
    }
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzzy_matching_prefers_exact_then_ignores_whitespace() {
        let lines = ["a", "  b  ", "c"];
        assert_eq!(find_sequence(&lines, &["b"], 0, false), Some(1));
        assert_eq!(find_sequence(&lines, &["c"], 0, true), Some(2));
        assert_eq!(find_sequence(&lines, &["a"], 1, false), None);
    }
}
