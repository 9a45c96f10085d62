//! apply_patch against a corpus of good and bad patches: each good one gives
//! the expected files, each bad one is refused with a message naming the
//! problem, and leaves every file as it was.

use std::collections::BTreeMap;
use std::path::Path;

use mlx_harmony_tools::apply_patch::{FileOp, parse_patch};
use mlx_harmony_tools::{PatchError, apply_patch};

const APP_PY: &str = "import sys\n\ndef greet():\n    print(\"Hi\")\n\ndef main():\n    greet()\n    return 0\n\nif __name__ == \"__main__\":\n    sys.exit(main())\n";

/// A project folder with a few files.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/app.py"), APP_PY).unwrap();
    std::fs::write(dir.path().join("obsolete.txt"), "old\n").unwrap();
    std::fs::write(dir.path().join("README.md"), "# Demo\n\nline\n").unwrap();
    dir
}

/// Every file under `root`, with its contents.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                files.insert(name, std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    files
}

#[test]
fn the_reference_example_adds_moves_updates_and_deletes() {
    let dir = project();
    let patch = "*** Begin Patch
*** Add File: hello.txt
+Hello world
*** Update File: src/app.py
*** Move to: src/main.py
@@ def greet():
-    print(\"Hi\")
+    print(\"Hello, world!\")
*** Delete File: obsolete.txt
*** End Patch";
    let summary = apply_patch(dir.path(), patch, false).unwrap();
    assert_eq!(
        summary.changes,
        [
            "A hello.txt",
            "M src/main.py (moved from src/app.py)",
            "D obsolete.txt"
        ]
    );
    let files = snapshot(dir.path());
    assert_eq!(files["hello.txt"], "Hello world\n");
    assert!(!files.contains_key("src/app.py"));
    assert!(!files.contains_key("obsolete.txt"));
    assert_eq!(
        files["src/main.py"],
        APP_PY.replace("print(\"Hi\")", "print(\"Hello, world!\")")
    );
}

#[test]
fn hunks_with_context_apply_in_order() {
    let dir = project();
    let patch = "*** Begin Patch
*** Update File: src/app.py
@@
 import sys
+import os
 
 def greet():
@@ def main():
     greet()
-    return 0
+    return os.EX_OK
*** End Patch";
    apply_patch(dir.path(), patch, false).unwrap();
    let text = std::fs::read_to_string(dir.path().join("src/app.py")).unwrap();
    assert!(
        text.starts_with("import sys\nimport os\n\ndef greet():"),
        "{text}"
    );
    assert!(
        text.contains("    greet()\n    return os.EX_OK\n"),
        "{text}"
    );
}

#[test]
fn end_of_file_hunks_and_pure_additions() {
    let dir = project();
    let patch = "*** Begin Patch
*** Update File: README.md
@@
 line
+last line
*** End of File
*** End Patch";
    apply_patch(dir.path(), patch, false).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("README.md")).unwrap(),
        "# Demo\n\nline\nlast line\n"
    );
    // A hunk of additions only, after a header line.
    let patch = "*** Begin Patch
*** Update File: README.md
@@ # Demo
+Introduction.
*** End Patch";
    apply_patch(dir.path(), patch, false).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("README.md")).unwrap(),
        "# Demo\nIntroduction.\n\nline\nlast line\n"
    );
}

#[test]
fn whitespace_differences_in_context_are_forgiven() {
    let dir = project();
    // Context with lost indentation and a trailing space: models do this.
    let patch = "*** Begin Patch
*** Update File: src/app.py
@@
 def main():
 greet() 
-    return 0
+    return 1
*** End Patch";
    apply_patch(dir.path(), patch, false).unwrap();
    let text = std::fs::read_to_string(dir.path().join("src/app.py")).unwrap();
    assert!(text.contains("    greet()\n    return 1\n"), "{text}");
}

#[test]
fn new_files_in_new_folders_and_a_dry_run() {
    let dir = project();
    let patch = "*** Begin Patch
*** Add File: docs/guide/intro.md
+# Intro
+
+Text.
*** End Patch";
    let before = snapshot(dir.path());
    let dry = apply_patch(dir.path(), patch, true).unwrap();
    assert!(dry.dry_run);
    assert!(dry.to_string().starts_with("Dry run"), "{dry}");
    assert_eq!(snapshot(dir.path()), before, "a dry run writes nothing");
    apply_patch(dir.path(), patch, false).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("docs/guide/intro.md")).unwrap(),
        "# Intro\n\nText.\n"
    );
}

/// Bad patches: (name, patch, text the error must contain).
const BAD: &[(&str, &str, &str)] = &[
    (
        "no begin",
        "*** Update File: README.md\n@@\n-line\n+LINE\n*** End Patch",
        "starts with `*** Begin Patch`",
    ),
    (
        "no end",
        "*** Begin Patch\n*** Update File: README.md\n@@\n-line\n+LINE",
        "ends with `*** End Patch`",
    ),
    ("empty", "*** Begin Patch\n*** End Patch", "changes no file"),
    (
        "unknown header",
        "*** Begin Patch\n*** Rename File: a\n*** End Patch",
        "expected `*** Add File:`",
    ),
    (
        "add line without plus",
        "*** Begin Patch\n*** Add File: new.txt\nno plus\n*** End Patch",
        "starts with `+`",
    ),
    (
        "bad hunk line",
        "*** Begin Patch\n*** Update File: README.md\n@@\n*line\n*** End Patch",
        "a hunk line starts with",
    ),
    (
        "context not found",
        "*** Begin Patch\n*** Update File: src/app.py\n@@\n def greet():\n-    print(\"Bye\")\n+    print(\"Hello\")\n*** End Patch",
        "src/app.py: hunk 1: these lines were not found",
    ),
    (
        "second hunk fails",
        "*** Begin Patch\n*** Update File: src/app.py\n@@ def greet():\n-    print(\"Hi\")\n+    print(\"Hello\")\n@@ def missing():\n-    pass\n*** End Patch",
        "src/app.py: hunk 2 (@@ def missing():): the line `def missing():` after `@@` was not found",
    ),
    (
        "update of a missing file",
        "*** Begin Patch\n*** Update File: nowhere.txt\n@@\n-a\n+b\n*** End Patch",
        "nowhere.txt: cannot be updated: there is no such file",
    ),
    (
        "add over an existing file",
        "*** Begin Patch\n*** Add File: README.md\n+new\n*** End Patch",
        "README.md: already exists",
    ),
    (
        "delete of a missing file",
        "*** Begin Patch\n*** Delete File: ghost.txt\n*** End Patch",
        "ghost.txt: cannot be deleted",
    ),
    (
        "parent directory",
        "*** Begin Patch\n*** Add File: ../escape.txt\n+x\n*** End Patch",
        "refused: `..` would leave the patch root",
    ),
    (
        "absolute path",
        "*** Begin Patch\n*** Add File: /tmp/mlx-harmony-escape.txt\n+x\n*** End Patch",
        "refused: absolute paths are not allowed",
    ),
    (
        "move onto an existing file",
        "*** Begin Patch\n*** Update File: obsolete.txt\n*** Move to: README.md\n@@\n-old\n+new\n*** End Patch",
        "README.md: cannot be the target of `*** Move to:`",
    ),
    (
        "move out of the root",
        "*** Begin Patch\n*** Update File: obsolete.txt\n*** Move to: ../../outside.txt\n@@\n-old\n+new\n*** End Patch",
        "refused: `..`",
    ),
];

#[test]
fn bad_patches_are_refused_with_a_clear_message_and_change_nothing() {
    for (name, patch, expected) in BAD {
        let dir = project();
        let before = snapshot(dir.path());
        // A good operation first: it must not be applied either (an empty
        // patch stays empty).
        let patch = if *name == "empty" {
            patch.to_string()
        } else {
            patch.replacen(
                "*** Begin Patch\n",
                "*** Begin Patch\n*** Add File: first.txt\n+applied?\n",
                1,
            )
        };
        let error = apply_patch(dir.path(), &patch, false).expect_err(name);
        let message = error.to_string();
        assert!(message.contains(expected), "{name}: {message}");
        assert_eq!(snapshot(dir.path()), before, "{name}: files changed");
    }
}

#[cfg(unix)]
#[test]
fn symbolic_links_out_of_the_root_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret\n").unwrap();
    let dir = project();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        dir.path().join("secret-link.txt"),
    )
    .unwrap();
    for patch in [
        "*** Begin Patch\n*** Add File: link/new.txt\n+x\n*** End Patch",
        "*** Begin Patch\n*** Update File: secret-link.txt\n@@\n-secret\n+changed\n*** End Patch",
        "*** Begin Patch\n*** Delete File: link/secret.txt\n*** End Patch",
    ] {
        let error = apply_patch(dir.path(), patch, false).unwrap_err();
        assert!(
            matches!(&error, PatchError::Path { message, .. } if message.contains("symbolic link")),
            "{error}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret.txt")).unwrap(),
        "secret\n"
    );
    assert!(!outside.path().join("new.txt").exists());
}

#[test]
fn the_parser_reads_every_operation() {
    let ops = parse_patch(
        "*** Begin Patch\n*** Add File: a\n+1\n*** Delete File: b\n*** Update File: c\n*** Move to: d\n@@ h\n x\n-y\n+z\n*** End of File\n*** End Patch\n",
    )
    .unwrap();
    assert_eq!(ops.len(), 3);
    assert!(matches!(&ops[0], FileOp::Add { path, contents } if path == "a" && contents == "1\n"));
    assert!(matches!(&ops[1], FileOp::Delete { path } if path == "b"));
    match &ops[2] {
        FileOp::Update {
            path,
            move_to,
            hunks,
        } => {
            assert_eq!(path, "c");
            assert_eq!(move_to.as_deref(), Some("d"));
            assert_eq!(hunks.len(), 1);
            assert_eq!(hunks[0].header.as_deref(), Some("h"));
            assert!(hunks[0].end_of_file);
            assert_eq!(hunks[0].lines.len(), 3);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_file_hard_linked_to_one_outside_the_root_is_replaced_not_written_through() {
    let dir = project();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "outside\n").unwrap();
    std::fs::hard_link(&secret, dir.path().join("linked.txt")).unwrap();
    let patch = "*** Begin Patch
*** Update File: linked.txt
@@
-outside
+changed inside
*** End Patch
";
    apply_patch(dir.path(), patch, false).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("linked.txt")).unwrap(),
        "changed inside\n"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "outside\n");
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".apply_patch")),
        "{names:?}"
    );
}
