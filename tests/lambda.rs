//! The example function, packed, served through real Runtime APIs.
//!
//! Nothing but a packed runtime answering real invocations proves that coldpack works as
//! a Lambda `bootstrap`. These tests build `examples/hello` into a tree that Lambda's zip
//! would break (`examples/hello/build-tree.sh`), pack it with `coldpack`, and start the
//! `bootstrap` the way Lambda does, against two Runtime APIs: cargo-lambda's emulator,
//! the pinned version that `tests/support/cargo-lambda.sh` installs into `.venv/`, and
//! `tests/support/runtime_api.py`, which behaves as AWS documents where the emulator does
//! not (202 answers, epoch deadlines, an init error answered at once). Everything listens
//! on 127.0.0.1, every wait has a deadline, and every process is killed when its guard
//! drops, so a failed assertion leaves nothing running.

mod util;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::{run_ok as run, write_program};

/// What `build-tree.sh` writes into the greeting file the handler reads at init.
const GREETING: &str = "Hello from a coldpacked runtime";
/// The longest any single wait may take: a server to listen, an invoke, an exit.
const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn cargo_lambda_serves_cold_start_then_reuses_copy_after_runtime_killed() {
    let scratch = Scratch::new();
    let emulator = Emulator::start(&scratch);
    serves_then_reuses_on_reinit(&scratch, &emulator.runtime_api, |event| {
        let (status, body) = emulator.invoke(event);
        assert_eq!(status, 200, "invoke answered {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("answer {body:?}: {e}"))
    });
}

#[test]
fn documented_api_serves_cold_start_then_reuses_copy_after_runtime_killed() {
    let scratch = Scratch::new();
    let api = DocumentedApi::start(&scratch);
    serves_then_reuses_on_reinit(&scratch, &api.runtime_api(), |event| {
        let outcome = api.invoke(event);
        assert_eq!(outcome["outcome"], "response", "{outcome}");
        outcome["payload"].clone()
    });
}

#[test]
fn cargo_lambda_relays_corrupt_payload_init_error_to_invoker() {
    let scratch = Scratch::new();
    let bootstrap = corrupt_copy(&scratch);
    let emulator = Emulator::start(&scratch);

    // The emulator hands an init error to the invoke waiting at that moment and drops it
    // if none waits, so the invoke goes first, as on Lambda, where an invoke causes init.
    let invoker = emulator.invoke_in_background(r#"{"name":"Ada"}"#);
    emulator.wait_for_log("request stack initialized");
    let mut runtime = start_bootstrap(&bootstrap, &emulator.runtime_api, &scratch, "corrupt");
    let exit = runtime.wait_exit(PATIENCE);
    assert!(
        !exit.success(),
        "a corrupt payload must fail the init: {exit}"
    );

    let (status, body) = invoker.join().expect("invoker thread");
    // Quirk of the emulator: the init error reaches the invoker as a 200 whose body is
    // the error document the bootstrap posted.
    assert_eq!(status, 200, "invoke answered {status}: {body}");
    let error: Value = serde_json::from_str(&body).expect("the posted error document");
    assert_is_corrupt_payload_report(&error, &runtime.log());
}

#[test]
fn documented_api_records_corrupt_payload_init_error_and_fails_the_invoke() {
    let scratch = Scratch::new();
    let bootstrap = corrupt_copy(&scratch);
    let api = DocumentedApi::start(&scratch);

    let invoker = {
        let api = api.client();
        thread::spawn(move || api.invoke(r#"{"name":"Ada"}"#))
    };
    wait_until("the invoke to be queued", || api.queued() == 1);
    let started = Instant::now();
    let mut runtime = start_bootstrap(&bootstrap, &api.runtime_api(), &scratch, "corrupt");
    let exit = runtime.wait_exit(PATIENCE);
    assert!(
        !exit.success(),
        "a corrupt payload must fail the init: {exit}"
    );
    // The documented API answers the report at once: nothing to wait for.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    let outcome = invoker.join().expect("invoker thread");
    assert_eq!(outcome["outcome"], "init_error", "{outcome}");
    assert_eq!(outcome["error_type"], "Runtime.PayloadCorrupt", "{outcome}");

    let init_errors = api.init_errors();
    let [report] = init_errors.as_array().expect("a list").as_slice() else {
        panic!("exactly one init error: {init_errors}");
    };
    assert_eq!(report["error_type"], "Runtime.PayloadCorrupt", "{report}");
    assert_eq!(report["content_type"], "application/json", "{report}");
    assert_is_corrupt_payload_report(&report["body"], &runtime.log());
}

#[test]
fn init_error_report_gives_up_on_a_silent_api() {
    let scratch = Scratch::new();
    let bootstrap = corrupt_copy(&scratch);
    // The kernel completes connections to a listener nobody accepts from: the report is
    // sent and then never answered, like an emulator holding it until the next invoke.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let runtime_api = silent.local_addr().unwrap().to_string();

    let started = Instant::now();
    let mut runtime = start_bootstrap(&bootstrap, &runtime_api, &scratch, "silent");
    let exit = runtime.wait_exit(Duration::from_secs(5));
    assert!(!exit.success(), "{exit}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the bootstrap waited {:?} for a silent Runtime API",
        started.elapsed()
    );
    assert_eq!(decisions(&runtime.log()), ["error"], "{}", runtime.log());
}

/// Cold start, invoke, kill the runtime, start again in the same cache (a re-init in
/// the same sandbox), invoke: both answers are right and the second start reused the copy.
fn serves_then_reuses_on_reinit(
    scratch: &Scratch,
    runtime_api: &str,
    invoke: impl Fn(&str) -> Value,
) {
    let bootstrap = packed_bootstrap();
    let cache = scratch.path().join("tmp");

    let mut runtime = start_bootstrap(bootstrap, runtime_api, scratch, "cold");
    assert_answer(&invoke(r#"{"name":"Ada"}"#), "Ada", &cache, bootstrap);
    assert_eq!(decisions(&runtime.log()), ["extract"], "{}", runtime.log());
    let cold_ms = start_ms(&runtime.log());
    runtime.stop();

    let runtime = start_bootstrap(bootstrap, runtime_api, scratch, "warm");
    assert_answer(&invoke(r#"{"name":"Bob"}"#), "Bob", &cache, bootstrap);
    assert_eq!(decisions(&runtime.log()), ["reuse"], "{}", runtime.log());
    eprintln!(
        "bootstrap: cold start {cold_ms} ms, warm start {} ms",
        start_ms(&runtime.log())
    );
}

/// The handler's answer proves it ran from the extracted tree, with its greeting read
/// through symlinks, in Lambda's working directory and environment.
fn assert_answer(answer: &Value, name: &str, cache: &Path, bootstrap: &Path) {
    assert_eq!(
        answer["message"],
        format!("{GREETING}, {name}!"),
        "{answer}"
    );
    let root = PathBuf::from(answer["runtime_root"].as_str().expect("runtime_root"));
    let cache = cache.canonicalize().expect("cache dir");
    assert_eq!(root.parent(), Some(cache.as_path()), "{answer}");
    let dir_name = root.file_name().unwrap().to_string_lossy();
    assert!(dir_name.starts_with("coldpack-hello."), "{answer}");
    assert_eq!(
        answer["executable"],
        json!(root.join("libexec/handler-v1")),
        "{answer}"
    );
    let task_root = bootstrap.parent().unwrap();
    assert_eq!(answer["cwd"], json!(task_root), "{answer}");
    assert_eq!(answer["task_root"], json!(task_root), "{answer}");
    assert_eq!(answer["handler"], "hello.handler", "{answer}");
}

/// The error document the bootstrap posted names the corrupt payload and carries the
/// same one-line reason as its log.
fn assert_is_corrupt_payload_report(error: &Value, log: &str) {
    assert_eq!(error["errorType"], "Runtime.PayloadCorrupt", "{error}");
    assert_eq!(error["stackTrace"], json!([]), "{error}");
    let message = error["errorMessage"].as_str().expect("errorMessage");
    assert!(!message.is_empty() && !message.contains('\n'), "{error}");
    assert!(
        log.contains(message),
        "the report's reason is not in the log:\n{log}"
    );
    assert_eq!(decisions(log), ["error"], "{log}");
}

/// The example's tree, built and packed once for every test of this binary.
fn packed_bootstrap() -> &'static Path {
    static PACKED: OnceLock<PathBuf> = OnceLock::new();
    PACKED.get_or_init(|| {
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lambda");
        if work.exists() {
            make_writable(&work);
            fs::remove_dir_all(&work).expect("remove the previous run's fixture");
        }
        let tree = work.join("hello-tree");
        let out = work.join("task");
        run(Command::new("bash")
            .arg(repo().join("examples/hello/build-tree.sh"))
            .arg(&tree));
        run(Command::new(env!("CARGO_BIN_EXE_coldpack"))
            .arg("pack")
            .arg(&tree)
            .args([
                "--entrypoint",
                "bin/handler",
                "--name",
                "hello",
                "--level",
                "3",
            ])
            .arg("-o")
            .arg(&out));
        out.join("bootstrap")
    })
}

/// A copy of the packed bootstrap with one byte of its compressed chunks flipped.
fn corrupt_copy(scratch: &Scratch) -> PathBuf {
    let mut bytes = fs::read(packed_bootstrap()).expect("read the packed bootstrap");
    // The file ends with a 56-byte trailer that opens with the payload's offset and
    // length (u64, little-endian); the chunks fill most of the payload, so its middle
    // byte is chunk data.
    let trailer = bytes.len() - 56;
    let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    let (offset, len) = (field(trailer), field(trailer + 8));
    bytes[offset + len / 2] ^= 0x55;

    let task = scratch.path().join("task");
    fs::create_dir_all(&task).unwrap();
    let bootstrap = task.join("bootstrap");
    write_program(&bootstrap, &bytes);
    // The header is intact, so the task part keeps its name: deploy it alongside, as
    // Lambda would, so that only the damaged chunk can be refused.
    for item in fs::read_dir(packed_bootstrap().parent().unwrap()).unwrap() {
        let item = item.unwrap();
        if item.file_name().to_string_lossy().starts_with("coldpack-") {
            run(Command::new("cp").arg("-a").arg(item.path()).arg(&task));
        }
    }
    bootstrap
}

/// Starts `bootstrap` as Lambda does: from the task root, with Lambda's variables and
/// nothing else, its output going to `<scratch>/<label>.log`. The cache is
/// `<scratch>/tmp`, shared by every start in the same test as `/tmp` is in a sandbox.
fn start_bootstrap(bootstrap: &Path, runtime_api: &str, scratch: &Scratch, label: &str) -> Guard {
    let task_root = bootstrap.parent().unwrap();
    let cache = scratch.path().join("tmp");
    fs::create_dir_all(&cache).unwrap();
    let mut command = Command::new(bootstrap);
    command
        .current_dir(task_root)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "coldpack-hello")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/coldpack-hello")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "coldpack-test")
        .env("LAMBDA_TASK_ROOT", task_root)
        .env("_HANDLER", "hello.handler")
        .env("COLDPACK_CACHE_DIR", &cache);
    Guard::spawn(
        "bootstrap",
        command,
        scratch.path().join(format!("{label}.log")),
    )
}

/// The `decision` of every bootstrap log line in `log`, in order.
fn decisions(log: &str) -> Vec<String> {
    bootstrap_lines(log)
        .map(|line| line["decision"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// How long the (only) start in `log` took before its exec, in milliseconds.
fn start_ms(log: &str) -> f64 {
    bootstrap_lines(log)
        .find_map(|line| line["ms"].as_f64())
        .unwrap_or_else(|| panic!("no start time in:\n{log}"))
}

fn bootstrap_lines(log: &str) -> impl Iterator<Item = Value> + '_ {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["coldpack"] == "bootstrap")
}

/// cargo-lambda's Runtime API emulator, alone (`--only-lambda-apis`), on a loopback
/// port of its own: a fresh one per test, since it keeps queued invokes between runtimes.
struct Emulator {
    process: Guard,
    addr: SocketAddr,
    /// What the emulator tells the function to use: `http://127.0.0.1:PORT/.rt`.
    runtime_api: String,
}

impl Emulator {
    fn start(scratch: &Scratch) -> Emulator {
        let port = free_port();
        let mut command = Command::new(cargo_lambda());
        // It reads the metadata of the Cargo project it runs in, so it runs in ours.
        command.current_dir(repo()).args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
            &port.to_string(),
            // Debug lines say when an invoke is queued.
            "-v",
        ]);
        let mut process = Guard::spawn(
            "cargo-lambda",
            command,
            scratch.path().join("cargo-lambda.log"),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut runtime_api = None;
        wait_until("cargo-lambda to listen", || {
            process.assert_running();
            runtime_api = process.log().lines().find_map(|line| {
                line.split_once("AWS_LAMBDA_RUNTIME_API=")
                    .map(|(_, v)| v.trim().to_owned())
            });
            runtime_api.is_some()
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        let runtime_api = runtime_api.unwrap();
        Emulator {
            process,
            addr,
            runtime_api,
        }
    }

    /// Invokes the default function `_` through the emulator's Lambda API: (status, body).
    fn invoke(&self, event: &str) -> (u16, String) {
        http(
            self.addr,
            "POST",
            "/2015-03-31/functions/_/invocations",
            event,
        )
        .unwrap_or_else(|e| panic!("invoke through cargo-lambda: {e}\n{}", self.process.log()))
    }

    fn invoke_in_background(&self, event: &str) -> thread::JoinHandle<(u16, String)> {
        let (addr, event) = (self.addr, event.to_owned());
        thread::spawn(move || {
            http(addr, "POST", "/2015-03-31/functions/_/invocations", &event)
                .unwrap_or_else(|e| panic!("invoke through cargo-lambda: {e}"))
        })
    }

    fn wait_for_log(&self, needle: &str) {
        wait_until(&format!("cargo-lambda to log {needle:?}"), || {
            self.process.log().contains(needle)
        });
    }
}

/// `tests/support/runtime_api.py`, on a loopback port it picks and prints.
struct DocumentedApi {
    _process: Guard,
    client: ApiClient,
}

/// What talks to the documented API's test endpoints; cheap to copy into a thread.
#[derive(Clone, Copy)]
struct ApiClient {
    addr: SocketAddr,
}

impl DocumentedApi {
    fn start(scratch: &Scratch) -> DocumentedApi {
        let script = repo().join("tests/support/runtime_api.py");
        let mut command = Command::new("python3");
        command.arg(script).args([
            "--invoke-timeout",
            &PATIENCE.as_secs().to_string(),
            // Bounds its life even if this test process is killed before its guard runs.
            "--max-lifetime",
            "300",
        ]);
        command.stdin(Stdio::null()).stdout(Stdio::piped());
        command.stderr(File::create(scratch.path().join("runtime_api.log")).unwrap());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3 (3.11 or newer is needed): {e}"));
        let mut process = Guard {
            child,
            name: "runtime_api.py",
            log: scratch.path().join("runtime_api.log"),
        };
        let stdout = process.child.stdout.take().unwrap();
        let line = coldpack::run::first_line(stdout, PATIENCE)
            .unwrap_or_else(|| panic!("runtime_api.py printed no port\n{}", process.log()));
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            panic!(
                "runtime_api.py printed {line:?}, not a port\n{}",
                process.log()
            )
        });
        DocumentedApi {
            _process: process,
            client: ApiClient {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            },
        }
    }

    /// Lambda's form of the address: `host:port`, no scheme, no path.
    fn runtime_api(&self) -> String {
        self.client.addr.to_string()
    }

    fn client(&self) -> ApiClient {
        self.client
    }

    fn invoke(&self, event: &str) -> Value {
        self.client.invoke(event)
    }

    fn queued(&self) -> u64 {
        self.client.get("/_test/queued")["queued"]
            .as_u64()
            .expect("a count")
    }

    fn init_errors(&self) -> Value {
        self.client.get("/_test/init-errors")
    }
}

impl ApiClient {
    /// Sends one event and returns the envelope saying how the function answered.
    fn invoke(&self, event: &str) -> Value {
        let (status, body) = http(self.addr, "POST", "/_test/invoke", event)
            .unwrap_or_else(|e| panic!("invoke through runtime_api.py: {e}"));
        assert!(
            status == 200 || status == 504,
            "invoke answered {status}: {body}"
        );
        serde_json::from_str(&body).expect("a JSON envelope")
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) =
            http(self.addr, "GET", path, "").unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }
}

/// One HTTP/1.1 exchange that closes its connection, bounded by [`PATIENCE`]:
/// (status, body). Both servers answer with a Content-Length, so reading to the end of
/// the stream is all the decoding needed.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, PATIENCE).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("send {method} {path}: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("answer to {method} {path}: {e}"))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("answer to {method} {path} has no end of headers: {answer:?}"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!("answer to {method} {path} is chunked: {head}"));
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("answer to {method} {path} has no status: {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// A child process that is killed and reaped when dropped, even by a failing test.
/// Its stdout and stderr go to `log`, which failure messages quote.
struct Guard {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Guard {
    fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> Guard {
        let file = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", command.get_program()));
        Guard { child, name, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Ok(Some(exit)) = self.child.try_wait() {
            panic!("{} exited early ({exit}):\n{}", self.name, self.log());
        }
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut exit = None;
        wait_until_within(&format!("{} to exit", self.name), within, || {
            exit = self.child.try_wait().expect("wait for a child");
            exit.is_some()
        });
        exit.unwrap()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh directory for one test, removed at the end even though the runtime tree
/// extracted into it has read-only directories.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(
            tempfile::Builder::new()
                .prefix("lambda-")
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                .expect("create a scratch directory"),
        )
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        make_writable(self.path());
    }
}

fn make_writable(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            make_writable(&entry.path());
        }
    }
}

/// The pinned cargo-lambda, or a failure that says how to install it: a missing tool
/// must fail these tests, never skip them.
fn cargo_lambda() -> PathBuf {
    let setup = repo().join("tests/support/cargo-lambda.sh");
    let script = fs::read_to_string(&setup).expect("read tests/support/cargo-lambda.sh");
    let pinned = script
        .lines()
        .find_map(|line| line.strip_prefix("version="))
        .expect("the script pins a version");
    let bin = repo().join(".venv/bin/cargo-lambda");
    let found = Command::new(&bin)
        .args(["lambda", "--version"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        found.starts_with(&format!("cargo-lambda {pinned} ")),
        "cargo-lambda {pinned} is not installed in .venv/ (found {found:?}): run {}",
        setup.display()
    );
    bin
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("packer/ sits in the repository")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().unwrap().port()
}

fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    wait_until_within(what, PATIENCE, condition);
}

fn wait_until_within(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "gave up after {within:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}
