//! Until the its library lands, mlx-harmony-server documents its flags and
//! refuses to run, cleanly.

use std::process::Command;

#[test]
fn help_works_and_running_fails_cleanly() {
    let bin = env!("CARGO_BIN_EXE_mlx-harmony-server");
    let help = Command::new(bin).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--device"));
    let run = Command::new(bin).output().unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("not implemented yet"));
}
