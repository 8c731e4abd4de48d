//! CPU time as the kernel counts it (`/proc/<pid>/stat`: utime + stime), for the daemon and for PostgreSQL,
//! over a measured window. The daemon, PostgreSQL and the load client share two cores, so CPU per event is what
//! bounds throughput.

use std::collections::HashMap;

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`getconf CLK_TCK`, 100 on Linux).
fn ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Fields of `/proc/<pid>/stat` after the command name (which may hold spaces): index 0 is field 3 (state).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // The state letter is not a number: keep positions by mapping it to 0.
    Some(rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
}

/// (utime + stime, cutime + cstime) in ticks: the process's own CPU and that of its reaped children.
fn ticks(pid: u32) -> Option<(u64, u64)> {
    let f = stat_fields(pid)?;
    // Fields 14–17 (utime, stime, cutime, cstime) are at 11–14 here; field 4 (ppid) at 1.
    Some((f.get(11)? + f.get(12)?, f.get(13)? + f.get(14)?))
}

fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1).map(|p| *p as u32)
}

/// CPU seconds a process has used so far.
pub fn process_cpu(pid: u32) -> Option<f64> {
    ticks(pid).map(|(own, _)| own as f64 / ticks_per_sec())
}

/// A snapshot of PostgreSQL's CPU: the backends serving one database, the server's background processes (WAL
/// writer, checkpointer, …) and the postmaster with every child it has reaped (so backends that exit inside the
/// window, like pgbench's, still count). Other clients' live backends are left out (their exits would count, but
/// the benchmark's own database is the only one busy during a run).
pub struct PgCpu {
    per_pid: HashMap<u32, u64>,
    reaped: u64,
}

impl PgCpu {
    /// `None` when PostgreSQL is not on this machine (its processes cannot be read). `conn` is an admin
    /// connection opened before the load, so a server at its connection limit still answers.
    pub async fn snapshot(conn: &mut sqlx::PgConnection, database: &str) -> Option<PgCpu> {
        let pids: Vec<(i32, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT pid, backend_type, datname::text FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
        )
        .fetch_all(&mut *conn)
        .await
        .ok()?;
        let own: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await
            .ok()?;
        let postmaster = parent(own as u32)?;
        let mut per_pid = HashMap::new();
        for (pid, kind, datname) in pids {
            let serving = datname.as_deref() == Some(database);
            let background = kind.as_deref() != Some("client backend");
            if serving || background {
                if let Some((own, _)) = ticks(pid as u32) {
                    per_pid.insert(pid as u32, own);
                }
            }
        }
        let (own, reaped) = ticks(postmaster)?;
        per_pid.insert(postmaster, own);
        Some(PgCpu { per_pid, reaped })
    }

    /// CPU seconds from `start` to `self`. A process only in `self` counts from zero (it started inside the
    /// window); one only in `start` exited and counts through the postmaster's reaped time.
    pub fn since(&self, start: &PgCpu) -> f64 {
        let live: u64 = self
            .per_pid
            .iter()
            .map(|(pid, t)| t.saturating_sub(start.per_pid.get(pid).copied().unwrap_or(0)))
            .sum();
        let gone_before: u64 = start
            .per_pid
            .iter()
            .filter(|(pid, _)| !self.per_pid.contains_key(pid))
            .map(|(_, t)| *t)
            .sum();
        // A process that exited was reaped with its whole life; what it used before the window is not ours.
        let reaped = self.reaped.saturating_sub(start.reaped).saturating_sub(gone_before);
        (live + reaped) as f64 / ticks_per_sec()
    }
}
