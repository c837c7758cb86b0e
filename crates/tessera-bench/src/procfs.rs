//! CPU time and resident memory of a process (or of a server and the processes it forks), from Linux `/proc`.

use std::io;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), 100 if unknown.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// User + system CPU time of `pid` (all its threads) in clock ticks: fields 14 and 15 of `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad /proc/{pid}/stat")))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11); // field 3 (state) is index 0; utime is field 14
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Fields after the command name of a `/proc/<pid>/stat` line: field 3 (state) is index 0.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(
        stat[stat.rfind(')')? + 1..]
            .split_ascii_whitespace()
            .collect(),
    )
}

/// Parent PID (field 4).
fn parse_ppid(stat: &str) -> Option<u32> {
    stat_fields(stat)?.get(1)?.parse().ok()
}

/// User + system CPU time of the children that have been waited for (fields 16 and 17).
fn parse_children_ticks(stat: &str) -> Option<u64> {
    let fields = stat_fields(stat)?;
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some(cutime + cstime)
}

/// The numeric entries of `/proc`.
fn all_pids() -> io::Result<impl Iterator<Item = u32>> {
    Ok(std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok()))
}

/// PIDs of the live processes whose parent is `pid`.
pub fn children(pid: u32) -> io::Result<Vec<u32>> {
    Ok(all_pids()?
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| parse_ppid(&s))
                == Some(pid)
        })
        .collect())
}

/// CPU time in microseconds of `pid`, of its children that have exited (and been waited for), and of its
/// live children: everything a server that forks a process per connection (PostgreSQL's postmaster) uses.
/// Grandchildren are not counted.
pub fn family_cpu_micros(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad /proc/{pid}/stat"));
    let mut ticks =
        parse_cpu_ticks(&stat).ok_or_else(bad)? + parse_children_ticks(&stat).ok_or_else(bad)?;
    for child in children(pid)? {
        // A child that exits between the listing and this read is counted by its parent's cutime
        // once waited for.
        if let Ok(t) = cpu_ticks(child) {
            ticks += t;
        }
    }
    Ok(ticks as f64 * 1e6 / clock_ticks_per_second() as f64)
}

/// The first process whose command line (`/proc/<pid>/cmdline`, split at NULs) satisfies `matches`.
pub fn find_process(matches: impl Fn(&[&str]) -> bool) -> io::Result<Option<u32>> {
    Ok(all_pids()?.find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
            let text = String::from_utf8_lossy(&raw);
            let args: Vec<&str> = text.trim_end_matches('\0').split('\0').collect();
            matches(&args)
        })
    }))
}

/// CPU time of `pid` in microseconds.
pub fn cpu_micros(pid: u32) -> io::Result<f64> {
    Ok(cpu_ticks(pid)? as f64 * 1e6 / clock_ticks_per_second() as f64)
}

/// CPU time in microseconds of the threads of `pid` whose name (`/proc/<pid>/task/<tid>/comm`) starts
/// with `prefix` (threads that have exited are not counted).
pub fn threads_cpu_micros(pid: u32, prefix: &str) -> io::Result<f64> {
    let mut ticks = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.starts_with(prefix) {
            continue;
        }
        if let Some(t) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| parse_cpu_ticks(&s))
        {
            ticks += t;
        }
    }
    Ok(ticks as f64 * 1e6 / clock_ticks_per_second() as f64)
}

/// Resident set size of `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no VmRSS in /proc/{pid}/status"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_after_a_name_with_spaces() {
        let stat = "1234 (a b) c) S 1 2 3 4 5 6 7 8 9 10 70 30 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(100));
    }

    #[test]
    fn parses_the_parent_and_the_waited_for_children() {
        let stat = "1234 (a b) c) S 1 2 3 4 5 6 7 8 9 10 70 30 5 6 20 0 1 0";
        assert_eq!(parse_ppid(stat), Some(1));
        assert_eq!(parse_children_ticks(stat), Some(11));
    }

    #[test]
    fn counts_a_child_and_finds_it_by_its_command_line() {
        let mut child = std::process::Command::new("sleep")
            .arg("30.123")
            .spawn()
            .unwrap();
        let me = std::process::id();
        assert!(children(me).unwrap().contains(&child.id()));
        family_cpu_micros(me).unwrap();
        // Polled with a deadline, not read once: one CI run read no match right after the
        // spawn (a /proc scan racing other processes starting and ending on a busy machine).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let found = loop {
            let found = find_process(|args| args.len() == 2 && args[1] == "30.123").unwrap();
            if found.is_some() || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, Some(child.id()));
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        cpu_ticks(pid).unwrap();
        assert!(rss_kib(pid).unwrap() > 0);
    }
}
