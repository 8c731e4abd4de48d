//! A minimal keep-alive HTTP/1.1 load client: pre-built requests, one task per connection, latencies recorded.
//! It has to be cheap: the daemon, the database and this client share two cores.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request's raw bytes.
pub type Raw = Arc<Vec<u8>>;

pub struct Run {
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    pub failures: Vec<String>,
}

impl Run {
    pub fn per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn p99(&mut self) -> Duration {
        self.latencies.sort_unstable();
        let i = (self.latencies.len() * 99 / 100).min(self.latencies.len().saturating_sub(1));
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

pub fn get(path: &str, token: Option<&str>) -> Raw {
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    Arc::new(format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}\r\n").into_bytes())
}

pub fn post(path: &str, headers: &[(&str, String)], body: &str) -> Raw {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    Arc::new(bytes)
}

/// Sends every request once over `connections` keep-alive connections, as fast as answers come, for at
/// most `limit`. A non-2xx answer is a failure.
pub async fn drive(port: u16, requests: Vec<Raw>, connections: usize, limit: Duration) -> Run {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (requests, next) = (requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = Vec::new();
            let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
                failures.push("connect failed".to_string());
                return (latencies, failures);
            };
            let _ = stream.set_nodelay(true);
            let mut buf = Vec::with_capacity(4096);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests.len() || started.elapsed() > limit {
                    break;
                }
                let sent = Instant::now();
                match exchange(&mut stream, &requests[i], &mut buf).await {
                    Ok(status) if (200..300).contains(&status) => latencies.push(sent.elapsed()),
                    Ok(status) => failures.push(format!("{status}: {}", String::from_utf8_lossy(&buf))),
                    Err(e) => {
                        failures.push(format!("i/o: {e}"));
                        break;
                    }
                }
            }
            (latencies, failures)
        }));
    }
    let mut run = Run {
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        failures: Vec::new(),
    };
    for task in tasks {
        let (latencies, failures) = task.await.expect("load task panicked");
        run.latencies.extend(latencies);
        run.failures.extend(failures);
    }
    run.elapsed = started.elapsed();
    run
}

/// Writes one request and reads its answer; returns the status, leaves the body in `buf`.
pub async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> std::io::Result<u16> {
    stream.write_all(request).await?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    let (head_end, length) = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed mid-body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = std::str::from_utf8(&buf[9..12.min(buf.len())])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    buf.drain(..head_end);
    Ok(status)
}
