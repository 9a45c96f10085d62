//! The set-up scripts' checks, run under a fake `uname` and fake
//! interpreters: what a Mac with only Apple's Python 3.9 is told.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn fake(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn find_python(path_dir: &Path, python: Option<&str>) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/find-python");
    let mut command = Command::new("bash");
    command
        .arg(script)
        .env("PATH", format!("{}:/usr/bin:/bin", path_dir.display()))
        .env_remove("PYTHON");
    if let Some(python) = python {
        command.env("PYTHON", python);
    }
    command.output().unwrap()
}

#[test]
fn an_old_python_is_refused_with_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    // Every candidate answers as Python 3.9 does: the version check fails.
    for name in [
        "python3",
        "python3.10",
        "python3.11",
        "python3.12",
        "python3.13",
    ] {
        fake(
            dir.path(),
            name,
            r#"case "$*" in *platform*) echo 3.9.6 ;; *) exit 1 ;; esac"#,
        );
    }
    fake(dir.path(), "uname", "echo Darwin");
    let out = find_python(dir.path(), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Python 3.10 or newer (python3 is 3.9.6)"),
        "{stderr}"
    );
    assert!(stderr.contains("brew install python@3.12"), "{stderr}");
    // PYTHON chooses one; a wrong one is said to be wrong.
    let refused = find_python(dir.path(), Some("/nonexistent/python"));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("PYTHON=/nonexistent/python"));
    fake(dir.path(), "good-python", "exit 0");
    let chosen = find_python(
        dir.path(),
        Some(dir.path().join("good-python").to_str().unwrap()),
    );
    assert!(chosen.status.success(), "{chosen:?}");
    assert!(String::from_utf8_lossy(&chosen.stdout).contains("good-python"));
}

fn bootstrap_on_a_fake_mac(dir: &Path) -> std::process::Output {
    fake(dir, "uname", "echo Darwin");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bootstrap");
    Command::new("bash")
        .arg(script)
        .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .output()
        .unwrap()
}

#[test]
fn bootstrap_on_a_mac_names_each_missing_prerequisite_and_its_command() {
    let dir = tempfile::tempdir().unwrap();
    // macOS 13, an old cmake, Command Line Tools without Metal.
    fake(dir.path(), "sw_vers", "echo 13.6");
    fake(dir.path(), "cmake", "echo 'cmake version 3.22.1'");
    fake(dir.path(), "xcrun", "exit 1");
    let out = bootstrap_on_a_fake_mac(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("macOS 14 or newer is needed (this is 13.6)"),
        "{stderr}"
    );
    assert!(stderr.contains("cmake 3.22.1 is too old"), "{stderr}");
    assert!(stderr.contains("brew upgrade cmake"), "{stderr}");
    assert!(
        stderr.contains("xcodebuild -downloadComponent MetalToolchain"),
        "{stderr}"
    );

    // All present: it says what the first build costs and succeeds.
    fake(dir.path(), "sw_vers", "echo 15.1");
    fake(dir.path(), "cmake", "echo 'cmake version 3.31.6'");
    fake(dir.path(), "xcrun", "echo /usr/bin/metal");
    let out = bootstrap_on_a_fake_mac(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
}

#[test]
fn a_mac_package_carries_the_metallib_beside_the_programs() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    fake(
        &bin,
        "uname",
        r#"case "$1" in -m) echo arm64 ;; *) echo Darwin ;; esac"#,
    );
    // A release build's programs and the metallib the build left in ~/.mlx.
    let target = dir.path().join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    for program in [
        "mlx-harmony-chat",
        "mlx-harmony-generate",
        "mlx-harmony-server",
        "mlx-harmony-convert-dialogue",
    ] {
        std::fs::write(target.join("release").join(program), "binary").unwrap();
    }
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".mlx/lib/0123abcd")).unwrap();
    std::fs::write(home.join(".mlx/lib/0123abcd/mlx.metallib"), "kernels").unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(repo.join("scripts/package"))
        .arg("--no-build")
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("HOME", &home)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("MLX_RS_METAL_PATH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let folder = repo.join(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        folder.to_string_lossy().ends_with("-darwin-arm64"),
        "{}",
        folder.display()
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("mlx.metallib")).unwrap(),
        "kernels"
    );
    assert!(folder.join("mlx-harmony-server").exists());
    std::fs::remove_dir_all(&folder).unwrap();
}
