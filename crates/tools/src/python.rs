//! The `python` tool: the model's code runs in a separate Python process that
//! lives as long as the conversation (variables persist between calls), with
//! limits on time, memory, CPU, processes and output, and, where the system
//! allows it, inside a bubblewrap sandbox without network.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;

use crate::{ToolError, truncate_output};

const DRIVER: &str = include_str!("python_driver.py");

/// The driver's first line, once its limits are set and it reads requests.
const READY: &str = r#"{"ready": true}"#;

/// openai-harmony's `ToolNamespaceConfig.python()` description, the text
/// GPT-OSS was trained on, split where this session's facts go in: the
/// timeout, the working folder, and whether the network is reachable.
const DESCRIPTION_HEAD: &str = "Use this tool to execute Python code in your chain of thought. \
The code will not be shown to the user. This tool should be used for internal reasoning, but not \
for code that is intended to be visible to the user (e.g. when creating plots, tables, or \
files).\n\nWhen you send a message containing Python code to python, it will be executed in a \
stateful Jupyter notebook environment. python will respond with the output of the execution or \
time out after ";

/// Limits and placement of the Python session.
#[derive(Clone, Debug)]
pub struct PythonConfig {
    /// The interpreter (default: `python3` from `PATH`).
    pub interpreter: PathBuf,
    /// The folder the code runs in; `None`: a new temporary folder per
    /// session, removed with it.
    pub workdir: Option<PathBuf>,
    /// Wall-clock limit per call.
    pub timeout: Duration,
    /// CPU-time limit per call, in seconds.
    pub cpu_seconds: u64,
    /// Address-space limit of the Python process.
    pub memory_bytes: u64,
    /// Most processes the session may run at once (fork bombs stop here).
    pub processes: u64,
    /// Largest file the code may write.
    pub file_bytes: u64,
    /// What the model is shown of a call's output, in characters.
    pub output_chars: usize,
    /// Run inside bubblewrap when it is installed and works (Linux).
    pub sandbox: bool,
}

impl Default for PythonConfig {
    fn default() -> Self {
        PythonConfig {
            interpreter: PathBuf::from("python3"),
            workdir: None,
            timeout: Duration::from_secs(120),
            cpu_seconds: 120,
            memory_bytes: 4 << 30,
            processes: 64,
            file_bytes: 256 << 20,
            output_chars: 16_000,
            sandbox: true,
        }
    }
}

/// What isolation the session runs under; said to the user, and in
/// docs/TOOLS.md per operating system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// bubblewrap: no network, own PID/IPC/UTS namespaces, system folders
    /// read-only, only the working folder writable, home folders hidden.
    Bubblewrap,
    /// macOS `sandbox-exec`: network denied, writes only in the working
    /// folder, home folders unreadable but for it and the interpreter.
    SandboxExec,
    /// Resource limits only: the code can reach the network and the user's files.
    LimitsOnly(String),
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Isolation::Bubblewrap => write!(
                f,
                "bubblewrap sandbox: no network, only the working folder writable, resource limits"
            ),
            Isolation::SandboxExec => write!(
                f,
                "sandbox-exec: no network, only the working folder writable, home folders \
                 unreadable, resource limits"
            ),
            Isolation::LimitsOnly(why) => write!(
                f,
                "resource limits only ({why}): the code can use the network and read your files"
            ),
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    stdout: String,
    stderr: String,
    result: Option<String>,
    error: Option<String>,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<std::io::Result<String>>,
}

/// How long Python may take to start (bubblewrap, the interpreter, the
/// driver's set-up) before the first call's own time limit starts: on a busy
/// machine start-up alone can take seconds, which must not count against the
/// model's code.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a stopped session's processes (a fork bomb's, say) are waited for
/// before the next session starts beside whatever is left.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

impl Worker {
    /// Kills the worker and everything it started, and waits until they are
    /// gone, so that a restarted session does not compete with the remains of
    /// the old one for the CPU or the process allowance.
    fn kill(&mut self) -> (std::process::ExitStatus, bool) {
        // The worker leads its own process group (outside bubblewrap); inside
        // it, bubblewrap's PID namespace ends with its first process, which
        // `--die-with-parent` takes down with the child we hold.
        let pid = self.child.id() as i32;
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let status = self.child.wait();
        let gone = self.wait_until_gone();
        (
            status.unwrap_or_else(|_| std::process::ExitStatus::from_raw(0)),
            gone,
        )
    }

    /// Every process of the session inherits the write end of the answers
    /// pipe (forked children keep it even when they drop standard output), so
    /// the reader sees the end of the pipe only once the last of them is gone.
    /// What the ended process wrote to stderr (its first 4000 bytes), as a
    /// line to append to a message, or nothing.
    fn stderr_tail(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(stderr) = self.child.stderr.take() {
            let _ = stderr.take(4000).read_to_string(&mut text);
        }
        match text.trim() {
            "" => String::new(),
            text => format!("\n{text}"),
        }
    }

    /// False when some were still running at [`CLEANUP_TIMEOUT`].
    fn wait_until_gone(&self) -> bool {
        let deadline = std::time::Instant::now() + CLEANUP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.answers.recv_timeout(left) {
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }
}

/// A stateful Python session.
pub struct PythonSession {
    config: PythonConfig,
    workdir: PathBuf,
    /// Removed on drop when the session made it.
    own_workdir: Option<PathBuf>,
    isolation: Isolation,
    /// The interpreter's real path and installation prefix (a pyenv shim or a
    /// venv would not work inside the sandbox).
    interpreter: (PathBuf, PathBuf),
    worker: Option<Worker>,
    /// Asked while a call runs; true stops it.
    stop: Option<crate::StopCheck>,
}

/// How often a running call asks its stop check.
const STOP_POLL: Duration = Duration::from_millis(100);

impl PythonSession {
    /// Finds the interpreter, makes the working folder and decides on the
    /// isolation; the Python process itself starts at the first call.
    pub fn new(config: PythonConfig) -> Result<Self, ToolError> {
        let interpreter = locate_interpreter(&config.interpreter)?;
        let (workdir, own_workdir) = match &config.workdir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    ToolError::Setup(format!(
                        "cannot create the python working folder {}: {e}",
                        dir.display()
                    ))
                })?;
                (dir.canonicalize().unwrap_or_else(|_| dir.clone()), None)
            }
            None => {
                let dir = new_temp_dir()?;
                (dir.clone(), Some(dir))
            }
        };
        let isolation = choose_isolation(config.sandbox, &interpreter);
        Ok(PythonSession {
            config,
            workdir,
            own_workdir,
            isolation,
            interpreter,
            worker: None,
            stop: None,
        })
    }

    /// While a call runs, `stop` is asked every 100 ms; once it answers
    /// true the call is stopped and the session restarted.
    pub fn stop_when(&mut self, stop: crate::StopCheck) {
        self.stop = Some(stop);
    }

    /// The namespace's description for the system message: the reference
    /// text with this session's timeout, folder and network access.
    pub fn description(&self) -> String {
        let seconds = self.config.timeout.as_secs_f64();
        // As Python prints a float ("120.0"), the way the reference says it.
        let seconds = if seconds.fract() == 0.0 {
            format!("{seconds:.1}")
        } else {
            format!("{seconds}")
        };
        let network = match self.isolation {
            Isolation::LimitsOnly(_) => "enabled",
            Isolation::Bubblewrap | Isolation::SandboxExec => "disabled",
        };
        format!(
            "{DESCRIPTION_HEAD}{seconds} seconds. The drive at '{}' can be used to save and \
             persist user files. Internet access for this session is {network}.",
            self.workdir.display()
        )
    }

    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// Ends the Python process: the next call starts with no variables.
    pub fn reset(&mut self) {
        self.stop_worker();
    }

    /// Stops the Python process; false when some of its processes were
    /// still running after [`CLEANUP_TIMEOUT`].
    fn stop_worker(&mut self) -> bool {
        self.worker.take().is_none_or(|mut worker| worker.kill().1)
    }

    /// Runs `code`; the text is what the model is shown. Errors in the code,
    /// timeouts and killed processes are reported in the text (the session
    /// restarts after the latter two); only a failure to start Python at all
    /// is an `Err`.
    pub fn run(&mut self, code: &str) -> Result<String, ToolError> {
        if self.worker.is_none() {
            self.worker = Some(self.start()?);
        }
        let worker = self.worker.as_mut().expect("just started");
        let request = serde_json::json!({ "code": code }).to_string();
        let sent = writeln!(worker.stdin, "{request}").and_then(|_| worker.stdin.flush());
        let deadline = std::time::Instant::now() + self.config.timeout;
        let mut stopped = false;
        let reply = match sent {
            Ok(()) => loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let wait = if self.stop.is_some() {
                    left.min(STOP_POLL)
                } else {
                    left
                };
                match worker.answers.recv_timeout(wait) {
                    Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {
                        if self.stop.as_ref().is_some_and(|stop| stop()) {
                            stopped = true;
                            break Err(mpsc::RecvTimeoutError::Timeout);
                        }
                    }
                    other => break other,
                }
            },
            Err(_) => Err(mpsc::RecvTimeoutError::Disconnected),
        };
        if stopped {
            self.stop_worker();
            return Ok(
                "Error: the call was stopped before it finished (the request was \
                       cancelled). The Python session was restarted: variables from earlier \
                       calls are gone."
                    .to_string(),
            );
        }
        let limit = self.config.output_chars;
        match reply {
            Ok(Ok(line)) => match serde_json::from_str::<Answer>(&line) {
                Ok(answer) => Ok(truncate_output(&format_answer(&answer), limit)),
                Err(e) => {
                    self.reset();
                    Err(ToolError::Failed(format!(
                        "the Python worker answered something unreadable ({e}); the session was restarted"
                    )))
                }
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let gone = self.stop_worker();
                Ok(format!(
                    "Error: the code did not finish within {} seconds and was stopped. The \
                     Python session was restarted: variables from earlier calls are gone.{}",
                    self.config.timeout.as_secs_f64(),
                    if gone {
                        ""
                    } else {
                        " Some processes it started were still ending; the next call may be slow."
                    }
                ))
            }
            Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let mut worker = self.worker.take().expect("present");
                let status = Some(worker.kill().0);
                // bubblewrap passes a signal death on as exit code 128 + signal.
                let signal = status.and_then(|s| {
                    s.signal()
                        .or_else(|| s.code().filter(|c| *c > 128).map(|c| c - 128))
                });
                let how = match (status, signal) {
                    (_, Some(libc::SIGKILL)) => {
                        "was killed (SIGKILL; usually the memory limit or the system's \
                         out-of-memory killer)"
                            .to_string()
                    }
                    (_, Some(libc::SIGXCPU)) => format!(
                        "was stopped for using more than {} s of CPU time",
                        self.config.cpu_seconds
                    ),
                    (_, Some(signal)) => format!("died of signal {signal}"),
                    (Some(s), None) => format!("exited ({s})"),
                    (None, None) => "ended".to_string(),
                };
                Ok(format!(
                    "Error: the Python process {how}. The session was restarted: variables \
                     from earlier calls are gone.{}",
                    worker.stderr_tail()
                ))
            }
        }
    }

    /// Starts the worker, trying again while the system says it is out of
    /// processes for now: after a fork bomb its processes can take longer to
    /// be reaped than [`CLEANUP_TIMEOUT`] on a loaded machine, and until they
    /// are, bubblewrap cannot create its namespaces (EAGAIN). That passes;
    /// failing the call for it would lose the user's request.
    fn start(&self) -> Result<Worker, ToolError> {
        let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.start_once() {
                Err(ToolError::Setup(why))
                    if why.contains("Resource temporarily unavailable")
                        && std::time::Instant::now() + pause < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    fn start_once(&self) -> Result<Worker, ToolError> {
        let limits = serde_json::json!({
            "memory_bytes": self.config.memory_bytes,
            "processes": self.config.processes,
            "file_bytes": self.config.file_bytes,
            "cpu_seconds": self.config.cpu_seconds,
            "capture_bytes": (self.config.output_chars * 4).max(4096),
            // Unused by the driver: it names the session in `ps`.
            "session": self.workdir,
        })
        .to_string();
        let (python, prefix) = &self.interpreter;
        let python_args = [
            "-I".to_string(),
            "-u".to_string(),
            "-c".to_string(),
            DRIVER.to_string(),
            limits,
        ];
        let mut command = match &self.isolation {
            Isolation::Bubblewrap => {
                let mut c = Command::new("bwrap");
                c.args(bubblewrap_args(&self.workdir, prefix))
                    .arg("--")
                    .arg(python);
                c
            }
            Isolation::SandboxExec => {
                let scratch = self.workdir.join(".tmp");
                std::fs::create_dir_all(&scratch).map_err(|e| {
                    ToolError::Setup(format!(
                        "cannot create the python scratch folder {}: {e}",
                        scratch.display()
                    ))
                })?;
                let mut c = Command::new("sandbox-exec");
                c.arg("-p")
                    .arg(sandbox_exec_profile(&self.workdir, &self.interpreter))
                    .arg(python)
                    // Temporary files (the driver's output capture too) go
                    // to the session's own folder, the one place it writes.
                    .env("TMPDIR", &scratch);
                c
            }
            Isolation::LimitsOnly(_) => Command::new(python),
        };
        command
            .args(&python_args)
            .current_dir(&self.workdir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.workdir)
            .env("LANG", "C.UTF-8")
            .env("PYTHONIOENCODING", "utf-8")
            .env("MPLBACKEND", "Agg")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().map_err(|e| {
            ToolError::Setup(format!(
                "cannot start Python ({}): {e}; install Python 3 or point --python-interpreter at one",
                python.display()
            ))
        })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (send, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut worker = Worker {
            child,
            stdin,
            answers,
        };
        // The driver says when it is ready to take code.
        match worker.answers.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(line)) if line.trim() == READY => Ok(worker),
            other => {
                let (status, _) = worker.kill();
                let why = match other {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        format!("it did not start within {} s", STARTUP_TIMEOUT.as_secs())
                    }
                    Ok(Ok(line)) => format!("it said {:?} instead of being ready", line),
                    _ => format!("it ended ({status})"),
                };
                Err(ToolError::Setup(format!(
                    "cannot start the Python session: {why}{}",
                    worker.stderr_tail()
                )))
            }
        }
    }
}

impl Drop for PythonSession {
    fn drop(&mut self) {
        self.reset();
        if let Some(dir) = &self.own_workdir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn format_answer(answer: &Answer) -> String {
    let mut parts = Vec::new();
    if !answer.stdout.is_empty() {
        parts.push(answer.stdout.trim_end_matches('\n').to_string());
    }
    if !answer.stderr.is_empty() {
        parts.push(format!(
            "[stderr]\n{}",
            answer.stderr.trim_end_matches('\n')
        ));
    }
    if let Some(result) = &answer.result {
        parts.push(result.clone());
    }
    if let Some(error) = &answer.error {
        parts.push(error.trim_end_matches('\n').to_string());
    }
    if parts.is_empty() {
        "(no output: print() what you want to see, or end with an expression)".to_string()
    } else {
        parts.join("\n")
    }
}

/// The interpreter's real executable and `sys.base_prefix`.
fn locate_interpreter(interpreter: &Path) -> Result<(PathBuf, PathBuf), ToolError> {
    let output = Command::new(interpreter)
        .args([
            "-I",
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable)); print(sys.base_prefix)",
        ])
        .output()
        .map_err(|e| {
            ToolError::Setup(format!(
                "the python tool needs Python 3: cannot run {} ({e}); install it or give \
                 --python-interpreter",
                interpreter.display()
            ))
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    match (output.status.success(), lines.next(), lines.next()) {
        (true, Some(exe), Some(prefix)) => Ok((PathBuf::from(exe), PathBuf::from(prefix))),
        _ => Err(ToolError::Setup(format!(
            "{} did not run as Python 3: {}",
            interpreter.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}

/// The prefix of the working folders this tool makes in the temporary
/// folder: `mlx-harmony-python-PID-N`.
const TEMP_PREFIX: &str = "mlx-harmony-python-";

/// Removes the working folders of processes that are gone: a program ended
/// by a signal never drops its sessions, and their folders (with whatever
/// the model's code wrote) would stay behind.
fn remove_abandoned_temp_dirs(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TEMP_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if pid > 0 && !process_exists(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether a process with this id exists (one of another user's counts).
fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let answer = unsafe { libc::kill(pid, 0) };
    answer == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn new_temp_dir() -> Result<PathBuf, ToolError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let count = COUNT.fetch_add(1, Ordering::Relaxed);
    if count == 0 {
        remove_abandoned_temp_dirs(&std::env::temp_dir());
    }
    let dir = std::env::temp_dir().join(format!("{TEMP_PREFIX}{}-{count}", std::process::id(),));
    std::fs::create_dir_all(&dir).map_err(|e| {
        ToolError::Setup(format!(
            "cannot create a working folder for python at {}: {e}",
            dir.display()
        ))
    })?;
    Ok(dir)
}

fn bubblewrap_args(workdir: &Path, prefix: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
        "--ro-bind-try",
        "/lib",
        "/lib",
        "--ro-bind-try",
        "/lib64",
        "/lib64",
        "--ro-bind-try",
        "/bin",
        "/bin",
        "--ro-bind-try",
        "/sbin",
        "/sbin",
        "--ro-bind-try",
        "/etc/alternatives",
        "/etc/alternatives",
        "--ro-bind-try",
        "/etc/ssl",
        "/etc/ssl",
        "--ro-bind-try",
        "/etc/ld.so.cache",
        "/etc/ld.so.cache",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let prefix = prefix.display().to_string();
    if !prefix.starts_with("/usr/") && prefix != "/usr" {
        args.extend(["--ro-bind".into(), prefix.clone(), prefix]);
    }
    let workdir = workdir.display().to_string();
    args.extend([
        "--bind".into(),
        workdir.clone(),
        workdir.clone(),
        "--chdir".into(),
        workdir,
    ]);
    args
}

/// The macOS sandbox profile, as close to the bubblewrap sandbox as
/// `sandbox-exec` allows: no network; writes only in the working folder (and
/// the terminal devices); nothing under /Users readable but the working
/// folder and the interpreter's own files. Later rules override earlier ones.
fn sandbox_exec_profile(workdir: &Path, interpreter: &(PathBuf, PathBuf)) -> String {
    let quoted = |path: &Path| {
        // Sandbox rules see resolved paths (/var is /private/var).
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let text = path.display().to_string();
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    };
    let (executable, prefix) = interpreter;
    let executable_dir = executable.parent().unwrap_or(Path::new("/"));
    let work = quoted(workdir);
    format!(
        "(version 1)\n\
         (allow default)\n\
         (deny network*)\n\
         (deny file-write*)\n\
         (allow file-write* (subpath {work}) (literal \"/dev/null\") (literal \"/dev/zero\") \
         (literal \"/dev/tty\") (regex #\"^/dev/fd/\"))\n\
         (deny file-read* (subpath \"/Users\") (subpath \"/private/var/root\"))\n\
         (allow file-read* (subpath {work}) (subpath {}) (subpath {}))\n",
        quoted(prefix),
        quoted(executable_dir),
    )
}

/// bubblewrap when asked for, installed and working (user namespaces can be
/// switched off, e.g. in containers); macOS's sandbox-exec; else limits only.
fn choose_isolation(sandbox: bool, interpreter: &(PathBuf, PathBuf)) -> Isolation {
    if !sandbox {
        return Isolation::LimitsOnly("the sandbox was switched off".into());
    }
    if cfg!(target_os = "macos") {
        return match Command::new("sandbox-exec")
            .args([
                "-p",
                "(version 1)(allow default)(deny network*)",
                "/usr/bin/true",
            ])
            .output()
        {
            Ok(o) if o.status.success() => Isolation::SandboxExec,
            _ => Isolation::LimitsOnly("sandbox-exec did not run".into()),
        };
    }
    let probe_dir = std::env::temp_dir();
    let probe = Command::new("bwrap")
        .args(bubblewrap_args(&probe_dir, &interpreter.1))
        .arg("--")
        .arg(&interpreter.0)
        .args(["-I", "-c", "pass"])
        .stdin(Stdio::null())
        .output();
    match probe {
        Ok(o) if o.status.success() => Isolation::Bubblewrap,
        Ok(o) => Isolation::LimitsOnly(format!(
            "bubblewrap does not work here: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(_) => Isolation::LimitsOnly(
            "bubblewrap is not installed; on Debian/Ubuntu: apt install bubblewrap".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_folders_of_processes_that_are_gone_are_removed() {
        let temp = tempfile::tempdir().unwrap();
        let own = std::process::id();
        // A pid above the kernel's limit (4194304) belongs to no process.
        let gone = temp.path().join(format!("{TEMP_PREFIX}4194399-0"));
        let alive = temp.path().join(format!("{TEMP_PREFIX}{own}-0"));
        let other = temp.path().join("someone-elses-folder-1-2");
        for dir in [&gone, &alive, &other] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("out.txt"), "x").unwrap();
        }
        remove_abandoned_temp_dirs(temp.path());
        assert!(!gone.exists(), "a dead process's folder stays");
        assert!(alive.exists() && other.exists());
    }

    #[test]
    fn the_macos_profile_confines_writes_and_home_reads() {
        let dir = std::env::temp_dir().join("mlx harmony \"quoted\"");
        std::fs::create_dir_all(&dir).unwrap();
        let profile = sandbox_exec_profile(
            &dir,
            &(PathBuf::from("/usr/bin/python3"), PathBuf::from("/usr")),
        );
        let dir = dir.canonicalize().unwrap().display().to_string();
        let quoted = format!("\"{}\"", dir.replace('"', "\\\""));
        assert!(profile.contains("(deny network*)"), "{profile}");
        assert!(profile.contains("(deny file-write*)"), "{profile}");
        assert!(
            profile.contains(&format!("(allow file-write* (subpath {quoted})")),
            "{profile}"
        );
        assert!(
            profile.contains("(deny file-read* (subpath \"/Users\")"),
            "{profile}"
        );
        assert!(
            profile.contains(&format!(
                "(allow file-read* (subpath {quoted}) (subpath \"/usr\")"
            )),
            "{profile}"
        );
        // Each rule is balanced.
        for line in profile.lines() {
            assert_eq!(
                line.matches('(').count(),
                line.matches(')').count(),
                "{line}"
            );
        }
    }
}
