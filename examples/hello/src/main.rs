//! The function that coldpack's quick start and end-to-end tests pack and invoke.
//!
//! Its runtime tree (see `build-tree.sh`) needs what a Lambda zip loses: Lambda execs it
//! through the symlink `bin/handler -> ../libexec/handler-v1`, and at init it reads its
//! greeting through two more symlinks (`etc/greeting -> ../share/greeting.txt`, with
//! `share -> data-v1`) and checks an empty directory. If any of that did not survive
//! packing, init fails loudly instead of answering with a default.

use std::path::{Path, PathBuf};

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

/// What init found in the runtime tree; every invocation answers from it.
struct Runtime {
    greeting: String,
    executable: PathBuf,
    root: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let runtime = match init() {
        Ok(runtime) => runtime,
        Err(reason) => {
            // Lambda sends stderr to CloudWatch; the non-zero exit fails the init.
            eprintln!("handler: init failed: {reason}");
            std::process::exit(1);
        }
    };
    let runtime = &runtime;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(answer(runtime, &event.payload))
    }))
    .await
}

fn init() -> Result<Runtime, String> {
    // On Linux this resolves every symlink: `<root>/libexec/handler-v1`, never `bin/handler`.
    let executable =
        std::env::current_exe().map_err(|err| format!("cannot find own executable: {err}"))?;
    let root = executable
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not inside a runtime tree", executable.display()))?;

    let greeting_path = root.join("etc/greeting");
    let greeting = std::fs::read_to_string(&greeting_path)
        .map_err(|err| format!("cannot read {}: {err}", greeting_path.display()))?;
    let empty_dir = root.join("var/cache");
    if !empty_dir.is_dir() {
        return Err(format!(
            "{} is missing: empty directories were lost",
            empty_dir.display()
        ));
    }
    Ok(Runtime {
        greeting: greeting.trim().to_owned(),
        root: root.to_owned(),
        executable,
    })
}

/// Besides the greeting, says where it runs from and what it inherited, so that a test
/// can check that the bootstrap's exec kept Lambda's environment and working directory.
fn answer(runtime: &Runtime, event: &Value) -> Value {
    let name = event.get("name").and_then(Value::as_str).unwrap_or("world");
    let env = |key| std::env::var(key).ok();
    json!({
        "message": format!("{}, {name}!", runtime.greeting),
        "runtime_root": runtime.root,
        "executable": runtime.executable,
        "cwd": std::env::current_dir().ok(),
        "handler": env("_HANDLER"),
        "task_root": env("LAMBDA_TASK_ROOT"),
    })
}
