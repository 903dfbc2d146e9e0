//! Tells the Lambda Runtime API why the bootstrap could not hand over to the runtime.
//!
//! Without this report, a failed init reaches the caller as a bare "Runtime exited"
//! and the reason sits only in CloudWatch; with it, the invoker sees our one-line reason
//! and a `Runtime.*` error type. This module is std only, on purpose: it lands in the
//! static bootstrap, where an HTTP client crate would cost size and start-up time, and
//! where name resolution is unavailable (static glibc's resolver needs shared libraries
//! at run time), so only numeric addresses and `localhost` are accepted. Every step has a
//! deadline: some emulators hold this request open until the next invoke, and the
//! bootstrap must exit anyway.
//!
//! <https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html#runtimes-api-initerror>

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::report::push_str;

/// The whole report (connect, send, first line of the answer) must fit in this.
const BUDGET: Duration = Duration::from_millis(1500);

/// Posts `/2018-06-01/runtime/init/error` to `runtime_api`, the value of
/// `AWS_LAMBDA_RUNTIME_API`: `host:port` in Lambda, `http://host:port/prefix` in
/// cargo-lambda's emulator. Returns once any 2xx status line arrives, or a one-line
/// reason why the report did not get through.
pub fn report_init_error(runtime_api: &str, error_type: &str, message: &str) -> Result<(), String> {
    let deadline = Instant::now() + BUDGET;
    let endpoint = Endpoint::parse(runtime_api)?;
    // The type goes into a header: a stray CR or LF would forge another one.
    if error_type.is_empty() || !error_type.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "Invalid error type {error_type:?} for the Runtime API"
        ));
    }
    let mut body = String::from("{\"errorMessage\":");
    push_str(&mut body, message);
    body.push_str(",\"errorType\":");
    push_str(&mut body, error_type);
    body.push_str(",\"stackTrace\":[]}");
    let request = format!(
        "POST {}/2018-06-01/runtime/init/error HTTP/1.1\r\n\
         Host: {}\r\n\
         Lambda-Runtime-Function-Error-Type: {error_type}\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        endpoint.path_prefix,
        endpoint.host,
        body.len()
    );
    let fail = |what: &str, err: std::io::Error| {
        format!("Runtime API at {}: {what}: {err}", endpoint.addr)
    };

    let mut stream = TcpStream::connect_timeout(&endpoint.addr, BUDGET)
        .map_err(|err| fail("cannot connect", err))?;
    stream
        .set_write_timeout(Some(
            remaining(deadline).map_err(|err| fail("cannot send", err))?,
        ))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|err| fail("cannot send", err))?;

    let status_line =
        read_status_line(&mut stream, deadline).map_err(|err| fail("no answer", err))?;
    let code = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(format!(
            "Runtime API at {} answered {status_line:?}",
            endpoint.addr
        ))
    }
}

/// Where to send the report: a socket address reached without name resolution, the
/// `Host` header value, and the path that goes before `/2018-06-01/...`.
struct Endpoint<'a> {
    addr: SocketAddr,
    host: &'a str,
    path_prefix: &'a str,
}

impl<'a> Endpoint<'a> {
    fn parse(runtime_api: &'a str) -> Result<Self, String> {
        let rest = if let Some(rest) = runtime_api.strip_prefix("http://") {
            rest
        } else if runtime_api.contains("://") {
            return Err(format!(
                "Unsupported Runtime API address {runtime_api:?}: only plain http is spoken"
            ));
        } else {
            runtime_api
        };
        let (host, path_prefix) = match rest.find('/') {
            Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let addr = socket_addr(host).ok_or_else(|| {
            format!(
                "Cannot use Runtime API address {runtime_api:?}: the static bootstrap needs a \
                 numeric IP address (or localhost) and a port, it cannot resolve host names"
            )
        })?;
        Ok(Self {
            addr,
            host,
            path_prefix,
        })
    }
}

/// `1.2.3.4:9001`, `[::1]:9001`, `localhost:9001`; a missing port means 80, as in a URL.
fn socket_addr(host: &str) -> Option<SocketAddr> {
    if let Ok(addr) = host.parse() {
        return Some(addr);
    }
    if let Some(port) = host.strip_prefix("localhost:") {
        return Some(SocketAddr::new(
            Ipv4Addr::LOCALHOST.into(),
            port.parse().ok()?,
        ));
    }
    let ip = match host.trim_start_matches('[').trim_end_matches(']') {
        "localhost" => Ipv4Addr::LOCALHOST.into(),
        numeric => numeric.parse::<IpAddr>().ok()?,
    };
    Some(SocketAddr::new(ip, 80))
}

/// Reads until the first CRLF: the status line is all we need, and reading the rest
/// would only give a slow server more chances to make us wait.
fn read_status_line(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<String> {
    let mut answer = Vec::with_capacity(128);
    let mut chunk = [0u8; 128];
    loop {
        if let Some(end) = answer.windows(2).position(|pair| pair == b"\r\n") {
            return Ok(String::from_utf8_lossy(&answer[..end]).into_owned());
        }
        if answer.len() > 1024 {
            return Err(std::io::Error::other("status line too long"));
        }
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        match stream.read(&mut chunk)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => answer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Time left before `deadline`; a zero timeout means "block forever" to std, so running
/// out of time is an error here instead.
fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(std::io::ErrorKind::TimedOut.into())
    } else {
        Ok(left)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    /// A one-shot Runtime API on loopback: answers `status_line` (or nothing, when
    /// `None`) and hands the raw request it read to the test.
    pub(crate) fn fake_runtime_api(
        status_line: Option<&'static str>,
    ) -> (SocketAddr, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 512];
            while !request_complete(&request) {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = sender.send(String::from_utf8(request).unwrap());
            match status_line {
                Some(status_line) => {
                    let answer =
                        format!("{status_line}\r\nContent-Length: 16\r\n\r\n{{\"status\":\"OK\"}}");
                    stream.write_all(answer.as_bytes()).unwrap();
                }
                // Holds the connection open, silent, well past the client's budget.
                None => thread::sleep(Duration::from_secs(5)),
            }
        });
        (addr, receiver)
    }

    fn request_complete(request: &[u8]) -> bool {
        let text = String::from_utf8_lossy(request);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .and_then(|value| value.parse::<usize>().ok())
            .unwrap_or(0);
        body.len() >= length
    }

    #[test]
    fn accepted_report_carries_type_header_and_json_body() {
        let (addr, request) = fake_runtime_api(Some("HTTP/1.1 202 Accepted"));
        let message = "Payload corrupt: chunk 3 hash \"mismatch\"\n";
        report_init_error(&addr.to_string(), "Runtime.PayloadCorrupt", message).unwrap();

        let request = request.recv().unwrap();
        assert!(request.starts_with("POST /2018-06-01/runtime/init/error HTTP/1.1\r\n"));
        assert!(
            request.contains("\r\nLambda-Runtime-Function-Error-Type: Runtime.PayloadCorrupt\r\n")
        );
        assert!(request.contains(&format!("\r\nHost: {addr}\r\n")));
        let body = request.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(
            body,
            r#"{"errorMessage":"Payload corrupt: chunk 3 hash \"mismatch\"\n","errorType":"Runtime.PayloadCorrupt","stackTrace":[]}"#
        );
    }

    #[test]
    fn url_form_keeps_its_path_prefix() {
        let (addr, request) = fake_runtime_api(Some("HTTP/1.1 200 OK"));
        let runtime_api = format!("http://{addr}/.rt/");
        report_init_error(&runtime_api, "Runtime.NoSpace", "No space left").unwrap();
        let request = request.recv().unwrap();
        assert!(request.starts_with("POST /.rt/2018-06-01/runtime/init/error HTTP/1.1\r\n"));
    }

    #[test]
    fn localhost_needs_no_resolver() {
        let (addr, _request) = fake_runtime_api(Some("HTTP/1.1 202 Accepted"));
        let runtime_api = format!("localhost:{}", addr.port());
        report_init_error(&runtime_api, "Runtime.PayloadCorrupt", "x").unwrap();
    }

    #[test]
    fn error_status_is_reported_as_failure() {
        let (addr, _request) = fake_runtime_api(Some("HTTP/1.1 500 Internal Server Error"));
        let err = report_init_error(&addr.to_string(), "Runtime.PayloadCorrupt", "x").unwrap_err();
        assert!(err.contains("500 Internal Server Error"), "{err}");
    }

    #[test]
    fn silent_server_times_out_within_two_seconds() {
        let (addr, _request) = fake_runtime_api(None);
        let started = Instant::now();
        let err = report_init_error(&addr.to_string(), "Runtime.PayloadCorrupt", "x").unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(err.contains("no answer"), "{err}");
    }

    #[test]
    fn closed_port_fails_at_once() {
        // Bind then drop: the port is very likely free and refuses connections.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = report_init_error(&addr.to_string(), "Runtime.PayloadCorrupt", "x").unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
    }

    #[test]
    fn addresses_are_parsed_without_name_resolution() {
        let parse =
            |text| Endpoint::parse(text).map(|endpoint| (endpoint.addr, endpoint.path_prefix));
        assert_eq!(
            parse("127.0.0.1:9001").unwrap(),
            ("127.0.0.1:9001".parse().unwrap(), "")
        );
        assert_eq!(
            parse("[::1]:9001").unwrap(),
            ("[::1]:9001".parse().unwrap(), "")
        );
        assert_eq!(
            parse("http://127.0.0.1:9000/.rt").unwrap(),
            ("127.0.0.1:9000".parse().unwrap(), "/.rt")
        );
        assert_eq!(
            parse("http://[::1]/a/b/").unwrap(),
            ("[::1]:80".parse().unwrap(), "/a/b")
        );
        assert_eq!(
            parse("localhost:9001").unwrap().0,
            "127.0.0.1:9001".parse().unwrap()
        );
    }

    #[test]
    fn unusable_addresses_fail_with_a_clear_reason() {
        for bad in [
            "lambda-runtime.internal:9001",
            "",
            "127.0.0.1:port",
            "127.0.0.1:99999",
        ] {
            let err = report_init_error(bad, "Runtime.PayloadCorrupt", "x").unwrap_err();
            assert!(err.contains("numeric IP address"), "{bad:?}: {err}");
        }
        let err = report_init_error("https://127.0.0.1:9001", "Runtime.X", "x").unwrap_err();
        assert!(err.contains("only plain http"), "{err}");
        let err = report_init_error("127.0.0.1:9", "Runtime.X\r\nEvil: 1", "x").unwrap_err();
        assert!(err.contains("Invalid error type"), "{err}");
    }
}
