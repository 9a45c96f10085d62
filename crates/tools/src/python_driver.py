# The worker behind mlx-harmony's python tool. Started once per conversation
# (inside the sandbox where there is one), it reads one JSON request per line
# on stdin: {"code": "..."}; runs the code in one namespace that persists
# across requests; and answers one JSON line on a private copy of its original
# stdout: {"stdout", "stderr", "result", "error"}.
#
# Output is captured at the file-descriptor level, so that C extensions and
# child processes are captured too, and cannot corrupt the answers.
import ast
import json
import math
import os
import resource
import signal
import sys
import tempfile
import traceback

LIMITS = json.loads(sys.argv[1])
MAIN_PID = os.getpid()
answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)


def set_limit(kind, value):
    if value is None:
        return
    try:
        soft, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        # Not every system enforces every limit (macOS: address space).
        pass


set_limit(resource.RLIMIT_AS, LIMITS.get("memory_bytes"))
def own_process_count():
    # RLIMIT_NPROC counts every process of the user, not only ours: the
    # allowance is on top of what the user already runs. /proc where there
    # is one (Linux), else `ps` (macOS, where a desktop user runs hundreds);
    # None when neither answers, and then no process limit is set rather
    # than one that would stop every subprocess.
    uid = os.getuid()
    if os.path.isdir("/proc"):
        count = 0
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
            except OSError:
                pass
        return count
    try:
        import subprocess
        listed = subprocess.run(["ps", "-A", "-o", "uid="], capture_output=True, text=True,
                                timeout=10, check=True).stdout.split()
        return sum(1 for u in listed if u.strip() == str(uid))
    except (OSError, subprocess.SubprocessError):
        return None


if LIMITS.get("processes") is not None and (running := own_process_count()) is not None:
    set_limit(resource.RLIMIT_NPROC, running + LIMITS["processes"])
set_limit(resource.RLIMIT_FSIZE, LIMITS.get("file_bytes"))
CPU_SECONDS = LIMITS.get("cpu_seconds")
CAPTURE_BYTES = LIMITS.get("capture_bytes", 1 << 20)


class CpuTimeExceeded(Exception):
    pass


def on_cpu_limit(signum, frame):
    raise CpuTimeExceeded(f"CPU time limit of {CPU_SECONDS} s exceeded")


signal.signal(signal.SIGXCPU, on_cpu_limit)


def cpu_used():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def arm_cpu_limit():
    # The limit is per call: the session's earlier CPU time does not count.
    # Only the soft limit moves (SIGXCPU, raised as CpuTimeExceeded): a
    # process cannot raise its hard limit again once lowered, so a finite hard
    # limit set here would leave later calls only what remains of the first
    # one's allowance. The wall-clock timeout stops code that ignores SIGXCPU.
    # RLIMIT_CPU counts whole seconds: rounding the time used up gives each
    # call at least CPU_SECONDS of its own.
    if CPU_SECONDS is None:
        return
    soft = math.ceil(cpu_used()) + int(CPU_SECONDS)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def compile_cell(code):
    """Compiles code; a trailing expression is evaluated separately so that
    its value can be shown, as in a notebook."""
    tree = ast.parse(code, "<python>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, "<python>", "exec")
    return body, (compile(last, "<python>", "eval") if last else None)


def read_capped(f):
    f.seek(0)
    data = f.read(CAPTURE_BYTES + 1)
    text = data[:CAPTURE_BYTES].decode("utf-8", "replace")
    if len(data) > CAPTURE_BYTES:
        size = os.fstat(f.fileno()).st_size
        text += f"\n[... {size - CAPTURE_BYTES} more bytes of output not kept]"
    return text


namespace = {"__name__": "__main__", "__builtins__": __builtins__}
answers.write(json.dumps({"ready": True}) + "\n")
answers.flush()

for line in requests:
    request = json.loads(line)
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    saved = os.dup(1), os.dup(2)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    result = error = None
    try:
        arm_cpu_limit()
        body, last = compile_cell(request["code"])
        exec(body, namespace)
        if last is not None:
            value = eval(last, namespace)
            if value is not None:
                result = repr(value)
    except BaseException as e:  # the model's code may raise anything, SystemExit too
        error = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
    finally:
        if os.getpid() != MAIN_PID:
            # A child the code forked (a fork bomb, say) must not answer.
            os._exit(1)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    answer = {
        "stdout": read_capped(out),
        "stderr": read_capped(err),
        "result": result,
        "error": error,
    }
    out.close()
    err.close()
    answers.write(json.dumps(answer) + "\n")
    answers.flush()
